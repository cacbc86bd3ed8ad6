"""URLs in mail bodies and their registrable domains (bundled public suffix list, no network)."""

from __future__ import annotations

import contextlib
import html
import re
from functools import lru_cache
from urllib.parse import urlsplit

from parsers.suffixes import registrable_domain_of
from schemas import Url

_URL = re.compile(r"""(?i)\b(?:https?|hxxps?)://[^\s"'<>()\[\]{}\\^`|]{1,2000}""")


@lru_cache(maxsize=16384)
def registrable_domain(host: str) -> str | None:
    host = host.strip(".").lower()
    if not host or host.replace(".", "").isdigit() or ":" in host:
        return None
    return registrable_domain_of(host)


def extract_urls(text: str, *, limit: int, seen: dict[str, Url]) -> None:
    """Add the URLs found in `text` to `seen` (keyed by URL, insertion-ordered) up to `limit`."""
    if "://" not in text:
        return
    for match in _URL.finditer(text):
        if len(seen) >= limit:
            return
        raw = match.group(0)
        if "&" in raw:
            raw = html.unescape(raw)
        raw = raw.rstrip(".,;:!?'\"")
        if raw in seen:
            continue
        seen[raw] = make_url(raw)


@lru_cache(maxsize=8192)
def make_url(raw: str) -> Url:
    host: str | None
    try:
        host = urlsplit(raw.replace("hxxp", "http", 1)).hostname
    except ValueError:
        host = None
    if host:
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii") if not host.isascii() else host
    return Url(url=raw[:2000], host=host, registrable_domain=registrable_domain(host) if host else None)
