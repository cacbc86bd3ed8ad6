"""Which offender keys a report counts against, per kind."""

from __future__ import annotations

from parsers.attribution import network_of
from schemas import AbuseReport
from sinks.kinds import KINDS

__all__ = ["JUNK_TYPES", "KINDS", "is_junk", "offender_keys", "reporter_key"]

JUNK_TYPES = frozenset({"abuse", "fraud", "virus", "other", "auth-failure"})
"""Feedback types that count against a source; `not-spam` and `opt-out` never do."""
MAX_KEYS_PER_KIND = 20
KEY_LENGTH = 320


def offender_keys(report: AbuseReport) -> list[tuple[str, str]]:
    """(kind, key) pairs, deduplicated, lower-case, bounded per kind."""
    source, original = report.source, report.original
    candidates: list[tuple[str, str | None]] = [
        ("ip", source.ip),
        ("network", network_of(source.ip)),
        ("tenant", source.tenant_id),
        ("from_domain", original.from_domain),
        ("mail_from_domain", original.mail_from_domain),
    ]
    candidates += [("dkim_domain", d) for d in original.dkim_domains[:MAX_KEYS_PER_KIND]]
    candidates += [("url_domain", d) for d in original.url_domains[:MAX_KEYS_PER_KIND]]
    seen: dict[tuple[str, str], None] = {}
    for kind, key in candidates:
        if key:
            seen.setdefault((kind, key.strip().lower()[:KEY_LENGTH]), None)
    if source.asn is not None:
        seen.setdefault(("asn", f"AS{source.asn}"), None)
    return list(seen)


def is_junk(report: AbuseReport) -> bool:
    return report.feedback_type in JUNK_TYPES


def reporter_key(report: AbuseReport) -> str:
    """Who counts as one reporter: the address, else the reporting software, else anonymous."""
    address = report.reporter.address or report.reporter.domain
    if address:
        return address.lower()[:KEY_LENGTH]
    return f"unknown:{report.format}"
