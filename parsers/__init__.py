"""Pure, bounded parsers: `bytes -> list[AbuseReport]` or a typed `ReportRejected`.

`parse_message` is imported on first use: `from parsers.limits import ...` (settings, the CLI's argument
parser) must not pay for the parsers' own imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parsers.limits import DEFAULT_LIMITS, ParseLimits
from parsers.trust import TrustPolicy

if TYPE_CHECKING:
    from parsers.api import parse_message

__all__ = ["DEFAULT_LIMITS", "ParseLimits", "TrustPolicy", "parse_message"]


def __getattr__(name: str) -> Any:
    if name == "parse_message":
        from parsers.api import parse_message  # noqa: PLC0415 - imported on first use, see above

        return parse_message
    raise AttributeError(f"module 'parsers' has no attribute {name!r}")
