"""X-ARF 0.1/0.2: `X-ARF: yes` mail with a YAML-ish `report.txt` part and an evidence part.

The report.txt of real senders is flat `Key: value` text that is often not valid YAML, so it is read as
fields rather than with a YAML parser.
"""

from __future__ import annotations

import re
from email.message import Message

from parsers.arf import (
    HEADERS_ONLY_TYPES,
    ORIGINAL_TYPES,
    has_arf_structure,
    headers_from_text,
    reported_from_part,
)
from parsers.attribution import StatedSource
from parsers.context import ParseContext
from parsers.fields import first, parse_fields
from parsers.headers import HeaderIndex, parse_address
from parsers.mime import content_type, filename, text_of
from parsers.original import ReportedMessage, make_report, reporter_from
from parsers.received import parse_ip
from parsers.vocabulary import feedback_type_for
from schemas import AbuseReport, FeedbackFields, Reporter

FORMAT = "xarf"
_REPORT_LINE = re.compile(r"^(report-type|category|source-type)\s*:", re.IGNORECASE | re.MULTILINE)


def detect(ctx: ParseContext) -> bool:
    for name in ("x-arf", "x-xarf"):
        value = ctx.headers.get(name)
        if value and value.strip().lower() in ("yes", "plain", "secure", "bulk", "true"):
            # ARF that also says X-ARF: the structure wins (parsers.arf)
            return not has_arf_structure(ctx)
    return False


def parse(ctx: ParseContext) -> list[AbuseReport]:
    parts = ctx.parts()
    defects: list[str] = []
    report_index = None
    fields: list[tuple[str, str]] = []
    for index, part in enumerate(parts):
        if (filename(part) or "").lower() == "report.txt" or content_type(part) in (
            "text/yaml",
            "application/yaml",
        ):
            report_index = index
            break
    if report_index is None:
        for index, part in enumerate(parts):
            if content_type(part).startswith("text/"):
                text = text_of(part, ctx.limits, ctx.defects, max_bytes=64 * 1024)
                if _REPORT_LINE.search(text):
                    report_index = index
                    defects.append("X-ARF report part not named report.txt: found by its fields")
                    break
    if report_index is not None:
        fields = parse_fields(text_of(parts[report_index], ctx.limits, ctx.defects, max_bytes=64 * 1024))
    else:
        defects.append("X-ARF mail without a report part: fields unknown")
    category = first(fields, "category") or ""
    report_type = first(fields, "report-type") or ""
    source = first(fields, "source")
    source_type = first(fields, "source-type")
    feedback = FeedbackFields(
        version=first(fields, "version"),
        user_agent=first(fields, "user-agent"),
        arrival_date=first(fields, "date"),
        category=category or None,
        report_type=report_type or None,
        source=source[:500] if source else None,
        source_type=source_type,
        extra={k: v[:500] for k, v in fields[:40] if k not in _KNOWN},
    )
    stated = None
    if source:
        ip = parse_ip(source.split()[0])
        if ip is not None:
            stated = StatedSource(ip, "xarf-source", f"Source: {source[:100]}")
        elif "." in source and "x" in source.lower() and re.search(r"\d+\.\d+\.\d+\.x", source, re.I):
            defects.append(f"X-ARF Source {source[:60]!r} is a masked IP: not attributable")
    reported = _evidence(parts, report_index, ctx, defects, source if stated is None else None)
    reporter = reporter_from(ctx.headers, ctx.defects, user_agent=feedback.user_agent)
    stated_reporter = parse_address(first(fields, "reported-from"), None)
    if stated_reporter and stated_reporter.address:
        reporter = Reporter(
            address=stated_reporter.address, domain=stated_reporter.domain, user_agent=feedback.user_agent
        )
    return [
        make_report(
            ctx,
            index=0,
            format=FORMAT,
            feedback_type=feedback_type_for(category, report_type),
            reporter=reporter,
            reported=reported,
            stated=stated,
            feedback=feedback,
            extra_defects=defects,
        )
    ]


_KNOWN = {"category", "report-type", "source", "source-type", "version", "user-agent", "date"}


def _evidence(
    parts: list[Message],
    report_index: int | None,
    ctx: ParseContext,
    defects: list[str],
    source_url: str | None,
) -> ReportedMessage | None:
    start = (report_index + 1) if report_index is not None else 1
    for part in parts[start:]:
        ctype = content_type(part)
        if ctype in ORIGINAL_TYPES:
            return reported_from_part(part, ctx, headers_only=ctype in HEADERS_ONLY_TYPES)
    texts: list[str] = []
    for part in parts[start:]:
        if content_type(part).startswith("text/"):
            text = text_of(part, ctx.limits, ctx.defects, max_bytes=ctx.limits.max_text_scan_bytes)
            if re.match(r"\s*(received|return-path|message-id|from|delivered-to):", text, re.IGNORECASE):
                return headers_from_text(text)
            texts.append(text)
    if source_url:
        texts.append(source_url)
    if not texts:
        return None
    return ReportedMessage(headers=HeaderIndex(()), headers_only=True, text="\n".join(texts))
