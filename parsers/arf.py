"""ARF (RFC 5965) feedback reports, RFC 6591 auth-failure reports, newer JMRP and X-ARF v4 (JSON).

Real senders wrap the report in multipart/mixed, label the report part text/plain, send `Version: 0.1`,
or omit required fields: each is tolerated and recorded as a defect.
"""

from __future__ import annotations

import json
import re
from email.message import Message

from parsers import spamcop
from parsers.attribution import StatedSource
from parsers.context import ParseContext
from parsers.fields import first, parse_fields
from parsers.headers import HeaderIndex
from parsers.mime import content_type, enclosed_message, param, payload_of, text_of
from parsers.original import ReportedMessage, make_report, reporter_from
from parsers.received import parse_ip
from parsers.vocabulary import feedback_type_for
from schemas import AbuseReport, FeedbackFields

FORMAT = "arf"
_FEEDBACK_LINE = re.compile(r"^feedback-type\s*:", re.IGNORECASE | re.MULTILINE)
ORIGINAL_TYPES = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "text/rfc822-header",
    "message/rfc822-headers",
    "message/global-headers",
)
HEADERS_ONLY_TYPES = (
    "text/rfc822-headers",
    "text/rfc822-header",
    "message/rfc822-headers",
    "message/global-headers",
)
FEEDBACK_TYPES = {
    "abuse": "abuse",
    "fraud": "fraud",
    "virus": "virus",
    "other": "other",
    "not-spam": "not-spam",
    "auth-failure": "auth-failure",
    "dmarc": "auth-failure",
    "opt-out": "opt-out",
    "opt-out-list": "opt-out",
    "unsubscribe": "opt-out",
    "complaint": "abuse",
    "spam": "abuse",
    "phishing": "fraud",
    "phish": "fraud",
    "malware": "virus",
}
_MAPPED = {
    "version": "version",
    "user-agent": "user_agent",
    "arrival-date": "arrival_date",
    "received-date": "arrival_date",
    "reporting-mta": "reporting_mta",
    "original-mail-from": "original_mail_from",
    "auth-failure": "auth_failure",
    "delivery-result": "delivery_result",
    "dkim-domain": "dkim_domain",
    "dkim-selector": "dkim_selector",
    "dkim-identity": "dkim_identity",
    "spf-dns": "spf_dns",
    "identity-alignment": "identity_alignment",
}
_LISTS = {
    "original-rcpt-to": "original_rcpt_to",
    "reported-domain": "reported_domain",
    "reported-uri": "reported_uri",
}
_IGNORED = {
    "feedback-type",
    "source-ip",
    "incidents",
    "content-type",
    "mime-version",
    "content-transfer-encoding",
}


def _feedback_part(ctx: ParseContext) -> tuple[int, Message, str] | None:
    parts = ctx.parts()
    for index, part in enumerate(parts):
        if content_type(part) == "message/feedback-report":
            return index, part, _part_text(part, ctx)
    # Mislabelled report parts: only in report-shaped mails (a report, or text + fields + original).
    if content_type(ctx.msg) != "multipart/report" and not (
        len(parts) in (2, 3) and content_type(parts[-1]) in ORIGINAL_TYPES
    ):
        return None
    for index, part in enumerate(parts[1:], start=1):
        if content_type(part) == "text/plain":
            text = text_of(part, ctx.limits, ctx.defects, max_bytes=64 * 1024)
            if _FEEDBACK_LINE.search(text):
                ctx.defects.add("feedback report in a text/plain part: accepted")
                return index, part, text
    return None


def _part_text(part: Message, ctx: ParseContext) -> str:
    if isinstance(payload_of(part), list):
        # compat32 parses message/* bodies as a message: the fields arrive as its headers.
        inner = enclosed_message(part, ctx.limits, ctx.defects)
        if inner is None:
            return ""
        chunks = [f"{k}: {v}" for k, v in HeaderIndex.of(inner, ctx.defects).order]
        body = inner.get_payload(decode=True)
        if isinstance(body, bytes):
            chunks.append(body.decode("utf-8", "replace"))
        return "\n".join(chunks)[: 256 * 1024]
    return text_of(part, ctx.limits, ctx.defects, max_bytes=256 * 1024)


def has_arf_structure(ctx: ParseContext) -> bool:
    """A `multipart/report; report-type=feedback-report`, or a `message/feedback-report` part in it: what
    makes a mail ARF whatever its headers claim (several ARF senders add `X-ARF: YES`)."""
    if content_type(ctx.msg) == "multipart/report" and (param(ctx.msg, "report-type") or "").lower() == (
        "feedback-report"
    ):
        return True
    return ctx.msg.is_multipart() and any(
        content_type(part) == "message/feedback-report" for part in ctx.parts()
    )


def detect(ctx: ParseContext) -> bool:
    if has_arf_structure(ctx):
        return True
    if not ctx.msg.is_multipart():
        return False
    return _feedback_part(ctx) is not None


def parse(ctx: ParseContext) -> list[AbuseReport]:
    found = _feedback_part(ctx)
    parts = ctx.parts()
    extra_defects: list[str] = []
    if found is None:
        extra_defects.append("multipart/report feedback-report without a feedback part: fields unknown")
        fb_index, fields = 0, []
    else:
        fb_index, _, text = found
        fields = parse_fields(text)
    feedback = _feedback_fields(fields, extra_defects)
    raw_type = (first(fields, "feedback-type") or "").strip().lower()
    if not raw_type:
        extra_defects.append("ARF Feedback-Type missing: assumed abuse")
        raw_type = "abuse"
    fmt = FORMAT
    if raw_type == "xarf":
        fmt = "xarf"
        feedback_type, updates = _xarf_v4(parts, ctx, extra_defects)
        feedback = feedback.model_copy(update=updates)
    else:
        feedback_type = FEEDBACK_TYPES.get(raw_type.split()[0], "other")
        if raw_type.split()[0] not in FEEDBACK_TYPES:
            extra_defects.append(f"unknown Feedback-Type {raw_type[:40]!r}: recorded as other")
    if feedback.auth_failure and feedback_type == "abuse":
        feedback_type = "auth-failure"
    if any(ctx.headers.get(name) for name in ("x-arf", "x-xarf")) and fmt == FORMAT:
        extra_defects.append("X-ARF header on an ARF report: read as ARF (the MIME structure wins)")

    reported = _original(parts[fb_index + 1 :] or parts, ctx, extra_defects)
    stated = None
    source_ip_value = first(fields, "source-ip")
    stated_by, stated_detail = "arf-source-ip", f"Source-IP: {(source_ip_value or '')[:100]}"
    if spamcop.is_spamcop(ctx.headers):
        # SpamCop's ARF reports are SpamCop reports; when its Source-IP field is missing, the human
        # part states the source as in its plain reports ("Email from <ip> / <date>").
        fmt = spamcop.FORMAT
        spamcop_id = spamcop.report_id(ctx.headers)
        if spamcop_id:
            feedback = feedback.model_copy(update={"extra": {**feedback.extra, "spamcop-id": spamcop_id}})
        if not source_ip_value:
            human = text_of(parts[0], ctx.limits, ctx.defects) if parts else ""
            stated_line = spamcop.stated_in_text(human)
            if stated_line:
                source_ip_value = stated_line[0]
                stated_by, stated_detail = "spamcop-source", f"Email from {stated_line[0]} / {stated_line[1]}"
                feedback = feedback.model_copy(update={"source_ip": stated_line[0]})
    if source_ip_value:
        ip = parse_ip(source_ip_value.split()[0])
        if ip is not None:
            stated = StatedSource(ip, stated_by, stated_detail[:200])
        else:
            extra_defects.append(f"ARF Source-IP {source_ip_value[:60]!r} is not an IP: ignored")
    elif feedback.source and feedback.source_type and "ip" in feedback.source_type.lower():
        ip = parse_ip(feedback.source)
        if ip is not None:
            stated = StatedSource(ip, "xarf-source", f"Source: {feedback.source}")
    reporter = reporter_from(ctx.headers, ctx.defects, user_agent=feedback.user_agent)
    report = make_report(
        ctx,
        index=0,
        format=fmt,
        feedback_type=feedback_type,
        reporter=reporter,
        reported=reported,
        stated=stated,
        feedback=feedback,
        extra_defects=extra_defects,
    )
    return [report]


def embedded_original(
    ctx: ParseContext, defects: list[str]
) -> tuple[ReportedMessage | None, StatedSource | None]:
    """The reported message and stated Source-IP of an ARF report found inside another report (an IODEF
    RecordItem): `ctx` is that ARF report's own context."""
    found = _feedback_part(ctx)
    parts = ctx.parts()
    fields = parse_fields(found[2]) if found else []
    start = found[0] + 1 if found else 0
    reported = _original(parts[start:] or parts, ctx, defects)
    value = first(fields, "source-ip")
    ip = parse_ip(value.split()[0]) if value else None
    stated = StatedSource(ip, "arf-source-ip", f"Source-IP: {value[:100]}") if ip and value else None
    return reported, stated


def _feedback_fields(fields: list[tuple[str, str]], defects: list[str]) -> FeedbackFields:
    values: dict[str, object] = {}
    extra: dict[str, str] = {}
    for key, value in fields:
        if key in _MAPPED:
            values.setdefault(_MAPPED[key], value[:1000])
        elif key in _LISTS:
            values.setdefault(_LISTS[key], [])
            target = values[_LISTS[key]]
            if isinstance(target, list) and len(target) < 100:
                target.append(value[:1000])
        elif key not in _IGNORED and len(extra) < 50:
            extra.setdefault(key, value[:1000])
    incidents = first(fields, "incidents")
    if incidents:
        try:
            values["incidents"] = int(incidents.split()[0])
        except ValueError:
            defects.append(f"ARF Incidents {incidents[:20]!r} is not a number: ignored")
    source_ip = first(fields, "source-ip")
    if source_ip:
        values["source_ip"] = source_ip.split()[0][:100]
    if "version" not in values and fields:
        defects.append("ARF Version field missing")
    return FeedbackFields.model_validate({**values, "extra": extra})


def _original(candidates: list[Message], ctx: ParseContext, defects: list[str]) -> ReportedMessage | None:
    for part in candidates:
        ctype = content_type(part)
        if ctype in ORIGINAL_TYPES:
            return reported_from_part(part, ctx, headers_only=ctype in HEADERS_ONLY_TYPES)
    for part in candidates:
        if content_type(part) == "text/plain":
            text = text_of(part, ctx.limits, ctx.defects, max_bytes=256 * 1024)
            if re.search(r"^(received|from|message-id|subject):", text, re.IGNORECASE | re.MULTILINE):
                defects.append("original message in a text/plain part: parsed as headers")
                return headers_from_text(text)
    defects.append("no original message in the report")
    return None


def reported_from_part(part: Message, ctx: ParseContext, *, headers_only: bool) -> ReportedMessage | None:
    inner = enclosed_message(part, ctx.limits, ctx.defects)
    if inner is None:
        return None
    return ReportedMessage(headers=HeaderIndex.of(inner, ctx.defects), msg=inner, headers_only=headers_only)


def headers_from_text(text: str) -> ReportedMessage:
    head = text.lstrip("\r\n").split("\n\n", 1)[0]
    return ReportedMessage(headers=HeaderIndex(parse_fields(head, limit=1000)), headers_only=True)


def _xarf_v4(
    parts: list[Message], ctx: ParseContext, defects: list[str]
) -> tuple[str, dict[str, str | None]]:
    """X-ARF v4: ARF with `Feedback-Type: xarf` and the report as a JSON part."""
    for part in parts:
        if content_type(part) not in ("application/json", "text/json"):
            continue
        text = text_of(part, ctx.limits, ctx.defects, max_bytes=256 * 1024)
        try:
            data = json.loads(text)
        except ValueError:
            defects.append("X-ARF v4 JSON part is not valid JSON")
            return "other", {}
        report = data.get("Report", {}) if isinstance(data, dict) else {}
        if not isinstance(report, dict):
            defects.append("X-ARF v4 JSON has no Report object")
            return "other", {}
        category = str(report.get("ReportClass") or report.get("Category") or "")[:100]
        report_type = str(report.get("ReportType") or report.get("Report-Type") or "")[:100]
        updates: dict[str, str | None] = {"category": category or None, "report_type": report_type or None}
        src = report.get("SourceIp") or report.get("Source")
        if isinstance(src, str):
            updates["source"] = src[:200]
            updates["source_type"] = "ip-address" if parse_ip(src) else "uri"
        return feedback_type_for(category, report_type), updates
    defects.append("X-ARF v4 report without a JSON part")
    return "other", {}
