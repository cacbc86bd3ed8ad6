"""Microsoft JMRP (legacy, non-ARF): `staff@hotmail.com`, subject `complaint about message from <IP>`.

Two shapes: multipart/mixed around one message/rfc822 carrying `X-HmXmrOriginalRecipient`, and the older
"unwrapped" form where the complaint is the original itself with those headers added on top.
Newer JMRP is plain ARF and is handled by `parsers.arf`. Detection never relies on User-Agent.
"""

from __future__ import annotations

import re
from email.message import Message

from parsers.attribution import StatedSource
from parsers.context import ParseContext
from parsers.headers import HeaderIndex, parse_address
from parsers.mime import MESSAGE_TYPES, content_type, enclosed_message
from parsers.original import ReportedMessage, make_report
from parsers.received import parse_ip
from schemas import AbuseReport, FeedbackFields, Reporter

FORMAT = "jmrp"
MARKER = "x-hmxmroriginalrecipient"
_SUBJECT = re.compile(r"complaint about message from\s+\[?([0-9A-Fa-f:.]+)", re.IGNORECASE)
_JMRP_SENDERS = ("staff@hotmail.com",)


def _from_jmrp(ctx: ParseContext) -> bool:
    sender = parse_address(ctx.headers.get("from"), None)
    return bool(sender and sender.address in _JMRP_SENDERS)


def _wrapped(ctx: ParseContext) -> list[Message]:
    if not ctx.msg.is_multipart():
        return []
    return [p for p in ctx.parts() if content_type(p) in MESSAGE_TYPES]


def detect(ctx: ParseContext) -> bool:
    if MARKER in ctx.headers:
        return True
    if _from_jmrp(ctx) and _SUBJECT.search(ctx.headers.get("subject") or ""):
        return True
    for part in _wrapped(ctx)[:3]:
        inner = enclosed_message(part, ctx.limits, ctx.defects)
        if inner is not None and inner.get(MARKER) is not None:
            return True
    return False


def parse(ctx: ParseContext) -> list[AbuseReport]:
    subject = ctx.headers.get("subject") or ""
    stated = None
    match = _SUBJECT.search(subject)
    if match:
        ip = parse_ip(match.group(1))
        if ip is not None:
            stated = StatedSource(ip, "jmrp-subject", f"Subject: {subject[:120]}")
    reporter = Reporter(address="staff@hotmail.com", domain="hotmail.com", name="Microsoft JMRP")
    reports: list[AbuseReport] = []
    if MARKER in ctx.headers and not _wrapped(ctx):
        # Unwrapped: everything from the first JMRP header down is the original message.
        order = ctx.headers.order
        start = next(i for i, (name, _) in enumerate(order) if name == MARKER)
        inner_headers = HeaderIndex(order[start:])
        reported = ReportedMessage(headers=inner_headers, msg=ctx.msg)
        reports.append(
            _report(
                ctx,
                0,
                reporter=reporter,
                reported=reported,
                stated=stated,
                headers=inner_headers,
                defects=["JMRP unwrapped form"],
            )
        )
        return reports
    for part in _wrapped(ctx)[: ctx.limits.max_reports]:
        inner = enclosed_message(part, ctx.limits, ctx.defects)
        if inner is None:
            continue
        headers = HeaderIndex.of(inner, ctx.defects)
        reported = ReportedMessage(headers=headers, msg=inner)
        reports.append(
            _report(
                ctx,
                len(reports),
                reporter=reporter,
                reported=reported,
                stated=stated,
                headers=headers,
                defects=[],
            )
        )
    if not reports:
        reports.append(
            _report(
                ctx,
                0,
                reporter=reporter,
                reported=None,
                stated=stated,
                headers=HeaderIndex(()),
                defects=["JMRP complaint without the original"],
            )
        )
    return reports


def _report(
    ctx: ParseContext,
    index: int,
    *,
    reporter: Reporter,
    reported: ReportedMessage | None,
    stated: StatedSource | None,
    headers: HeaderIndex,
    defects: list[str],
) -> AbuseReport:
    rcpt = headers.get(MARKER)
    feedback = FeedbackFields(
        original_rcpt_to=[rcpt] if rcpt else [],
        extra={
            k: v for k in ("x-sid-pra", "x-auth-result", "x-message-status") if (v := headers.get(k) or "")
        },
    )
    return make_report(
        ctx,
        index=index,
        format=FORMAT,
        feedback_type="abuse",
        reporter=reporter,
        reported=reported,
        stated=stated,
        feedback=feedback,
        extra_defects=defects,
    )
