"""Parse `Received` lines of the shapes real MTAs write (Postfix, Exim, Sendmail, qmail, Exchange...).

Only what attribution needs is extracted: the connecting IP as recorded by the receiving MTA, the names
around it, the receiving host and the protocol. Everything is best effort and never raises.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CLAUSE = re.compile(r"(?:^|\s)(from|by|via|with|id|for)\s", re.IGNORECASE)
_CLAUSE_LOWER = re.compile(r"(?:^|\s)(from|by|via|with|id|for)\s")
_PAREN = re.compile(r"\(([^()]*)\)")
_BRACKET = re.compile(r"\[([^\[\]]{2,60})\]")
_IP_TOKEN = re.compile(r"(?<![\w.:-])((?:IPv6:)?[0-9A-Fa-f:.]{2,50}(?:%\w+)?)(?![\w.:-])")
_HELO_IP = re.compile(r"(?:helo|ehlo)\s*[=\s]\s*\[?[^\s\])]*\]?", re.IGNORECASE)
_AUTH_PROTOCOL = re.compile(r"^(?:E?SMTPS?A|LMTPS?A|ESMTPSA|UTF8SMTPS?A)$", re.IGNORECASE)


def parse_ip(text: str | None) -> IPAddress | None:
    """An IP from the forms found in mail (`IPv6:` prefix, `%zone`, IPv4-mapped, brackets), else None."""
    if not text:
        return None
    return _parse_ip(text)


@lru_cache(maxsize=8192)
def _parse_ip(text: str) -> IPAddress | None:
    # Cached: the same relays (the recipient's own MX above all) recur in every message, and `ipaddress`
    # parses in Python; the addresses are immutable.
    value = text.strip().strip("[]()")
    if value[:5].lower() == "ipv6:":
        value = value[5:].strip()
    value = value.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(slots=True)
class Hop:
    raw: str
    from_host: str | None = None
    from_ip: IPAddress | None = None
    rdns: str | None = None
    by_host: str | None = None
    protocol: str | None = None
    via: str | None = None

    @property
    def authenticated(self) -> bool:
        return bool(self.protocol and _AUTH_PROTOCOL.match(self.protocol))


def _clauses(line: str) -> dict[str, str]:
    """Split a Received line into its keyword clauses, ignoring keywords inside comments."""
    masked = _mask_comments(line)
    # An ASCII line is searched lower-cased, where the case-sensitive pattern is twice as fast as the
    # case-insensitive one (lower-casing other text may change its length, and with it the positions).
    lowered = masked.isascii()
    matches = list(_CLAUSE_LOWER.finditer(masked.lower()) if lowered else _CLAUSE.finditer(masked))
    ends = [match.start() for match in matches[1:]]
    if matches:
        ends.append(len(line))
    out: dict[str, str] = {}
    for match, end in zip(matches, ends, strict=True):
        key = match.group(1) if lowered else match.group(1).lower()
        if key not in out:
            out[key] = line[match.end() : end].strip()
    return out


_INNERMOST_COMMENT = re.compile(r"\([^()]*\)")


def _blank(match: re.Match[str]) -> str:
    return " " * len(match.group(0))


def _mask_comments(line: str) -> str:
    """The line with (nested) comments blanked out, keeping every other character at its position."""
    if "(" not in line:
        return line
    for _ in range(20):  # nesting depth; deeper comments are hostile and stay masked below
        line, found = _INNERMOST_COMMENT.subn(_blank, line)
        if not found or "(" not in line:  # nothing left to mask: spare the pass that finds nothing
            break
    opening = line.find("(")
    if opening >= 0:  # unbalanced: the rest of the line is comment
        line = line[:opening] + " " * (len(line) - opening)
    return line


def parse_received(line: str) -> Hop:
    value = line.split(";", 1)[0] if ";" in line else line
    hop = Hop(raw=line)
    clauses = _clauses(" " + value)
    from_clause = clauses.get("from")
    by_clause = clauses.get("by")
    if by_clause:
        hop.by_host = _first_token(by_clause)
    with_clause = clauses.get("with")
    if with_clause:
        hop.protocol = _first_token(with_clause)
    if "via" in clauses:
        hop.via = clauses["via"][:80]
    if from_clause:
        _parse_from(from_clause, hop)
    return hop


def _first_token(text: str) -> str | None:
    token = text.split(None, 1)[0] if text.split() else ""
    token = token.strip("();,<>")
    return token[:255] or None


def _parse_from(text: str, hop: Hop) -> None:
    head = _mask_comments(text).split()
    first = head[0] if head else None
    if first:
        hop.from_host = first.strip("[]")[:255] or None
    comments = _PAREN.findall(text)
    for comment in comments:
        cleaned = _HELO_IP.sub(" ", comment)
        ip = _ip_in(cleaned)
        if ip is not None:
            hop.from_ip = ip
            name = cleaned.split("[", 1)[0].strip().split()
            if name and parse_ip(name[0]) is None and name[0].lower() not in ("unknown", "helo", "ehlo"):
                hop.rdns = name[0].strip("()")[:255]
            return
    # Exim writes the connecting address first: "from [1.2.3.4] (helo=name)"; Exchange "from HOST (ip)".
    if first:
        ip = parse_ip(first)
        if ip is not None:
            hop.from_ip = ip
            return
    ip = _ip_in(_mask_comments(text))
    if ip is not None:
        hop.from_ip = ip


def _ip_in(text: str) -> IPAddress | None:
    for candidate in _BRACKET.findall(text):
        ip = parse_ip(candidate)
        if ip is not None:
            return ip
    for candidate in _IP_TOKEN.findall(text):
        ip = parse_ip(candidate)
        if ip is not None:
            return ip
    return None
