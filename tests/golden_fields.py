"""Which fields the golden files pin: the contract fields and the analyst context that matters most."""

from __future__ import annotations

from typing import Any

from schemas import AbuseReport

FIELDS = (
    "format",
    "feedback_type",
    "reporter.address",
    "source.ip",
    "source.handoff_ip",
    "source.platform",
    "source.tenant_id",
    "source.tenant_domain",
    "original.message_id",
    "original.subject",
    "original.from_domain",
    "original.mail_from_domain",
    "original.dkim_domains",
    "original.url_domains",
    "original.headers_only",
    "feedback.source_ip",
    "feedback.auth_failure",
    "feedback.reported_domain",
)


def pick(report: AbuseReport) -> dict[str, Any]:
    data = report.model_dump(mode="json")
    out: dict[str, Any] = {}
    for path in FIELDS:
        value: Any = data
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        out[path] = value
    return out
