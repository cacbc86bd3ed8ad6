"""Microsoft 365 reporting mailbox: a user-reported message delivered by the Report button or add-ins.

A new message from the reporter with exactly one `.eml`/`.msg` attached; the subject starts with `1|`
/`Junk:`, `2|`/`Not junk:` or `3|`/`Phishing:`. The legacy subject is
`Action|NetworkMessageId|SenderIp|FromAddress|(Subject)`, split on the first four `|` only.
"""

from __future__ import annotations

import re

from parsers.attached import attached_messages
from parsers.attribution import StatedSource
from parsers.context import ParseContext
from parsers.headers import HeaderIndex, parse_address
from parsers.original import ReportedMessage, make_report, reporter_from
from parsers.received import parse_ip
from schemas import AbuseReport, FeedbackFields

FORMAT = "ms-submission"
ADMIN_SENDERS = ("submissions@messaging.microsoft.com",)
_PREFIX = re.compile(r"^\s*(?:(?P<code>[123])\||(?P<word>junk|not junk|phishing|phish)\s*:)", re.IGNORECASE)
_CODES = {"1": "abuse", "2": "not-spam", "3": "fraud"}
_WORDS = {"junk": "abuse", "not junk": "not-spam", "phishing": "fraud", "phish": "fraud"}


def is_admin_result(headers: HeaderIndex) -> bool:
    sender = parse_address(headers.get("from"), None)
    return bool(sender and sender.address in ADMIN_SENDERS)


def _feedback_type(subject: str) -> str | None:
    match = _PREFIX.match(subject)
    if not match:
        return None
    if match.group("code"):
        return _CODES[match.group("code")]
    return _WORDS[match.group("word").lower()]


def detect(ctx: ParseContext) -> bool:
    subject = ctx.headers.get("subject") or ""
    if _feedback_type(subject) is None or not ctx.msg.is_multipart():
        return False
    return len(attached_messages(ctx.msg, ctx, ctx.defects)) == 1


def parse(ctx: ParseContext) -> list[AbuseReport]:
    subject = ctx.headers.get("subject") or ""
    feedback_type = _feedback_type(subject) or "abuse"
    inner = attached_messages(ctx.msg, ctx, ctx.defects)[0]
    stated = None
    extra: dict[str, str] = {}
    defects: list[str] = []
    if re.match(r"^\s*[123]\|", subject):
        fields = subject.strip().split("|", 4)
        if len(fields) == 5:
            _, network_id, sender_ip, from_address, rest = fields
            extra = {
                "network-message-id": network_id.strip()[:100],
                "from-address": from_address.strip()[:320],
            }
            ip = parse_ip(sender_ip)
            if ip is not None:
                stated = StatedSource(ip, "ms-submission-sender-ip", f"subject SenderIp {sender_ip.strip()}")
            elif sender_ip.strip():
                defects.append(f"legacy submission SenderIp {sender_ip.strip()[:60]!r} is not an IP")
            extra["subject"] = rest.strip()[:500]
        else:
            defects.append("legacy submission subject with fewer than five fields")
    reporter = reporter_from(ctx.headers, ctx.defects)
    reported = ReportedMessage(headers=HeaderIndex.of(inner, ctx.defects), msg=inner)
    return [
        make_report(
            ctx,
            index=0,
            format=FORMAT,
            feedback_type=feedback_type,
            reporter=reporter,
            reported=reported,
            stated=stated,
            feedback=FeedbackFields(extra=extra) if extra else None,
            extra_defects=defects,
        )
    ]
