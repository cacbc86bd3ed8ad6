"""Named parse limits. Every input is attacker-controlled, so every loop and buffer is bounded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ParseLimits:
    max_message_bytes: int = 32 * 1024 * 1024
    """A larger input is rejected before parsing."""
    max_parts: int = 500
    """MIME parts walked per message; the rest are skipped with a defect."""
    max_depth: int = 8
    """Nesting of multiparts and enclosed messages."""
    max_decoded_bytes: int = 16 * 1024 * 1024
    """Decoded size of one part; larger parts are not decoded (size is still recorded)."""
    max_text_scan_bytes: int = 512 * 1024
    """Text scanned per part for URLs and inline-forward blocks."""
    max_urls: int = 200
    max_reports: int = 50
    """Reports one input may yield (several attached junk mails)."""
    max_xml_bytes: int = 4 * 1024 * 1024
    """An XML attachment (IODEF) larger than this is not parsed."""
    max_header_bytes: int = 256 * 1024
    """Header block scanned for attribution; larger header blocks are truncated with a defect."""


DEFAULT_LIMITS = ParseLimits()
