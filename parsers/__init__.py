"""Pure, bounded parsers: `bytes -> list[AbuseReport]` or a typed `ReportRejected`."""

from __future__ import annotations

from parsers.api import parse_message
from parsers.limits import DEFAULT_LIMITS, ParseLimits
from parsers.trust import TrustPolicy

__all__ = ["DEFAULT_LIMITS", "ParseLimits", "TrustPolicy", "parse_message"]
