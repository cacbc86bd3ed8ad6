"""`parse_message`: bytes in, normalized reports out (or a `ReportRejected`). Pure: no I/O, no clock."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

from abusepipe.errors import LimitExceeded, ReportRejected
from parsers.context import ParseContext
from parsers.fastmime import NestingTooDeepDefect, TooManyPartsDefect
from parsers.headers import Defects, HeaderIndex
from parsers.limits import DEFAULT_LIMITS, ParseLimits
from parsers.mime import content_type, normalise_bytes, param, parse_limited
from parsers.ms_submission import is_admin_result
from parsers.msg import MsgError, is_msg, msg_to_message
from parsers.original import ReportedMessage, make_report, trap_reporter
from parsers.registry import FORMAT_PARSERS
from parsers.trust import TrustPolicy
from schemas import AbuseReport

DEFAULT_TRUST = TrustPolicy()
OWN_DEFECTS = (NestingTooDeepDefect, TooManyPartsDefect)
_BOUNCE_REPORT_TYPES = ("delivery-status", "disposition-notification")


def parse_message(
    raw: bytes,
    *,
    received_at: datetime | None = None,
    trap: bool = False,
    trust: TrustPolicy = DEFAULT_TRUST,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> list[AbuseReport]:
    """Every report in one input message.

    Raises `ReportRejected` (with a one-line reason) when the input yields no report; any other failure
    inside a parser is converted to a rejection too, so no input can crash a stage.
    """
    try:
        return _parse(raw, received_at=received_at, trap=trap, trust=trust, limits=limits)
    except ReportRejected:
        raise
    except RecursionError as exc:
        raise ReportRejected("message structure nested too deeply to parse") from exc
    except MemoryError as exc:
        raise ReportRejected("message needs more memory than allowed to parse") from exc
    except Exception as exc:  # a parser bug must not lose the message: it is rejected and kept
        raise ReportRejected(f"parser error ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _parse(
    raw: bytes, *, received_at: datetime | None, trap: bool, trust: TrustPolicy, limits: ParseLimits
) -> list[AbuseReport]:
    if not raw.strip():
        raise ReportRejected("empty input")
    defects = Defects()
    if len(raw) > limits.max_message_bytes:
        raise LimitExceeded("message size", len(raw), limits.max_message_bytes)
    if is_msg(raw):
        try:
            msg = msg_to_message(raw, limits, defects)
        except MsgError as exc:
            raise ReportRejected(str(exc)) from exc
        defects.add("Outlook .msg file: read as the reported message")
    else:
        body = normalise_bytes(raw, defects)
        msg = parse_limited(body, limits)
    for defect in msg.defects:
        defects.add(str(defect) if isinstance(defect, OWN_DEFECTS) else f"MIME: {type(defect).__name__}")
    headers = HeaderIndex.of(msg, defects)
    if not headers.order:
        raise ReportRejected("no mail headers: not an e-mail message")
    ctx = ParseContext(
        raw=raw,
        msg=msg,
        headers=headers,
        limits=limits,
        trust=trust,
        received_at=received_at,
        trap=trap,
        defects=defects,
    )
    ctx.report_date = report_date(headers, trap=trap)
    if trap:
        return [_junk_itself(ctx, "trap")]
    if is_msg(raw):
        return [_junk_itself(ctx, "forward-attachment")]
    if is_admin_result(headers):
        raise ReportRejected(
            "Microsoft submission result mail (submissions@messaging.microsoft.com), not a report"
        )
    for parser in FORMAT_PARSERS.values():
        if parser.detect(ctx):
            reports = parser.parse(ctx)
            if reports:
                return reports
    if content_type(msg) == "multipart/report":
        report_type = (param(msg, "report-type") or "").lower()
        if report_type in _BOUNCE_REPORT_TYPES:
            raise ReportRejected(f"{report_type} notification (a bounce or receipt), not an abuse report")
    raise ReportRejected(
        "not an abuse report: no ARF/X-ARF/SpamCop/JMRP structure, no attached or inline-forwarded message"
        " (use --trap for a mailbox where each message is the junk)"
    )


def report_date(headers: HeaderIndex, *, trap: bool) -> datetime | None:
    """The report's own date: the Date header, or for trap mail the newest Received stamp (our MTA's)."""
    value = None
    if trap:
        received = headers.get("received")
        if received and ";" in received:
            value = received.rsplit(";", 1)[1]
    if value is None:
        value = headers.get("date")
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _junk_itself(ctx: ParseContext, format: str) -> AbuseReport:
    """The input is the junk: a trap mailbox's message, or a bare Outlook .msg saved by whoever reports it."""
    reported = ReportedMessage(headers=ctx.headers, msg=ctx.msg, sha256=ctx.input_sha256)
    return make_report(
        ctx,
        index=0,
        format=format,
        feedback_type="abuse",
        reporter=trap_reporter(ctx.headers),
        reported=reported,
    )


__all__ = ["parse_message"]
