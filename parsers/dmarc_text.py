"""Plain-text DMARC failure reports (Exim/OpenDMARC style) that carry no message/feedback-report part."""

from __future__ import annotations

import re

from parsers.arf import headers_from_text
from parsers.attribution import StatedSource
from parsers.context import ParseContext
from parsers.mime import content_type, text_of
from parsers.original import ReportedMessage, make_report, reporter_from
from parsers.received import parse_ip
from schemas import AbuseReport, FeedbackFields

FORMAT = "dmarc-text"
_SUBJECT = re.compile(r"\bDMARC\b.*\b(forensic|failure)\b", re.IGNORECASE)
_SENDER_IP = re.compile(
    r"^\s*(?:Sender IP Address|Source IP)\s*:\s*([0-9A-Fa-f:.]+)", re.IGNORECASE | re.MULTILINE
)
_SENDER_DOMAIN = re.compile(r"^\s*Sender Domain\s*:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
_HEADERS_MARK = re.compile(r"^-{3,}.*copy of the headers.*$", re.IGNORECASE | re.MULTILINE)


def _text(ctx: ParseContext) -> str:
    texts = [
        text_of(p, ctx.limits, ctx.defects, max_bytes=256 * 1024)
        for p in ctx.parts()
        if content_type(p) == "text/plain"
    ]
    return "\n".join(texts)


def detect(ctx: ParseContext) -> bool:
    if not _SUBJECT.search(ctx.headers.get("subject") or ""):
        return False
    return bool(_SENDER_IP.search(_text(ctx)))


def parse(ctx: ParseContext) -> list[AbuseReport]:
    text = _text(ctx)
    stated = None
    match = _SENDER_IP.search(text)
    ip = parse_ip(match.group(1)) if match else None
    if ip is not None and match is not None:
        stated = StatedSource(ip, "dmarc-report-sender-ip", match.group(0).strip()[:200])
    reported: ReportedMessage | None = None
    mark = _HEADERS_MARK.search(text)
    if mark:
        reported = headers_from_text(text[mark.end() :])
    domain = _SENDER_DOMAIN.search(text)
    feedback = FeedbackFields(
        auth_failure="dmarc",
        source_ip=str(ip) if ip else None,
        reported_domain=[domain.group(1).lower()[:255]] if domain else [],
    )
    return [
        make_report(
            ctx,
            index=0,
            format=FORMAT,
            feedback_type="auth-failure",
            reporter=reporter_from(ctx.headers, ctx.defects),
            reported=reported,
            stated=stated,
            feedback=feedback,
            extra_defects=["DMARC failure report as plain text without a message/feedback-report part"],
        )
    ]
