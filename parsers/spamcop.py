"""SpamCop reports: `<id>@reports.spamcop.net`, subject `[SpamCop (<ip or url>) id:<n>]<subject>`.

The spam follows `[ Offending message ]` inline in the plain-text body (or as a message/rfc822 part).
"""

from __future__ import annotations

import re

from parsers.attribution import StatedSource
from parsers.context import ParseContext
from parsers.headers import HeaderIndex, parse_address
from parsers.mime import MESSAGE_TYPES, content_type, enclosed_message, parse_limited, text_of
from parsers.original import ReportedMessage, make_report, reporter_from
from parsers.received import parse_ip
from schemas import AbuseReport, Evidence, FeedbackFields

FORMAT = "spamcop"
_SENDER = re.compile(r"^[\w.+-]+@reports\.spamcop\.net$", re.IGNORECASE)
_SUBJECT = re.compile(r"\[SpamCop \(([^)\s]+)\) id:(\d+)\]", re.IGNORECASE)
_EMAIL_FROM = re.compile(r"^Email from ([0-9A-Fa-f:.]+)\s*/\s*(.+)$", re.MULTILINE)
_OFFENDING = re.compile(r"^\[ Offending message \]\s*$", re.MULTILINE)
_VERSION = re.compile(r"^\[ SpamCop (V[\w.]+) \]", re.MULTILINE)


def is_spamcop(headers: HeaderIndex) -> bool:
    """Sent by SpamCop: its report sender, or its subject tag."""
    sender = parse_address(headers.get("from"), None)
    if sender and sender.address and _SENDER.match(sender.address):
        return True
    return bool(_SUBJECT.search(headers.get("subject") or ""))


def stated_in_text(text: str) -> tuple[str, str] | None:
    """SpamCop's `Email from <ip> / <date>` line: (ip, date) as written."""
    found = _EMAIL_FROM.search(text)
    return (found.group(1), found.group(2).strip()) if found else None


def report_id(headers: HeaderIndex) -> str | None:
    match = _SUBJECT.search(headers.get("subject") or "")
    return match.group(2) if match else None


def detect(ctx: ParseContext) -> bool:
    return is_spamcop(ctx.headers)


def parse(ctx: ParseContext) -> list[AbuseReport]:
    subject = ctx.headers.get("subject") or ""
    defects: list[str] = []
    body = ""
    reported: ReportedMessage | None = None
    for part in ctx.parts():
        ctype = content_type(part)
        if ctype in MESSAGE_TYPES and reported is None:
            inner = enclosed_message(part, ctx.limits, ctx.defects)
            if inner is not None:
                reported = ReportedMessage(headers=HeaderIndex.of(inner, ctx.defects), msg=inner)
        elif ctype == "text/plain" and not body:
            body = text_of(part, ctx.limits, ctx.defects)
    stated = None
    evidence: list[Evidence] = []
    match = _SUBJECT.search(subject)
    stated_text = match.group(1) if match else None
    email_from = _EMAIL_FROM.search(body)
    if email_from:
        stated_text = email_from.group(1)
    ip = parse_ip(stated_text)
    if ip is not None:
        detail = email_from.group(0)[:200] if email_from else f"Subject: {subject[:120]}"
        stated = StatedSource(ip, "spamcop-source", detail)
    elif stated_text:
        evidence.append(Evidence(field="original.urls", value=stated_text[:500], method="spamcop-subject"))
    if reported is None:
        offending = _OFFENDING.search(body)
        if offending:
            text = body[offending.end() :].lstrip("\r\n")
            data = text[: ctx.limits.max_decoded_bytes].encode("utf-8", "surrogateescape")
            inner = parse_limited(data, ctx.limits)
            reported = ReportedMessage(headers=HeaderIndex.of(inner, ctx.defects), msg=inner)
        else:
            defects.append("SpamCop report without the offending message")
    version = _VERSION.search(body)
    feedback = FeedbackFields(
        user_agent=f"SpamCop {version.group(1)}" if version else "SpamCop",
        source_ip=str(ip) if ip else None,
        arrival_date=email_from.group(2).strip()[:100] if email_from else None,
        extra={"spamcop-id": match.group(2)} if match else {},
    )
    reporter = reporter_from(ctx.headers, ctx.defects, user_agent=feedback.user_agent)
    return [
        make_report(
            ctx,
            index=0,
            format=FORMAT,
            feedback_type="abuse",
            reporter=reporter,
            reported=reported,
            stated=stated,
            feedback=feedback,
            extra_evidence=evidence,
            extra_defects=defects,
        )
    ]
