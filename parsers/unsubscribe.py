"""Mailbox-provider unsubscribe mails (Apple iCloud `X-Apple-Unsubscribe: true`): an opt-out, not ARF."""

from __future__ import annotations

from parsers.context import ParseContext
from parsers.headers import parse_address
from parsers.original import make_report, reporter_from
from schemas import AbuseReport, FeedbackFields

FORMAT = "unsubscribe"


def detect(ctx: ParseContext) -> bool:
    return (ctx.headers.get("x-apple-unsubscribe") or "").strip().lower() == "true"


def parse(ctx: ParseContext) -> list[AbuseReport]:
    list_address = parse_address(ctx.headers.get("to"), None)
    feedback = FeedbackFields(
        user_agent="Apple Mail unsubscribe",
        original_rcpt_to=[list_address.address] if list_address and list_address.address else [],
        reported_domain=[list_address.domain] if list_address and list_address.domain else [],
    )
    return [
        make_report(
            ctx,
            index=0,
            format=FORMAT,
            feedback_type="opt-out",
            reporter=reporter_from(ctx.headers, ctx.defects),
            reported=None,
            feedback=feedback,
            extra_defects=["unsubscribe request: the original message is not included"],
        )
    ]
