"""Forwards to an abuse mailbox: attached messages (one report per junk mail) and inline forwards."""

from __future__ import annotations

import html
import re
from email.message import Message

from parsers.attached import attached_messages, innermost
from parsers.context import ParseContext
from parsers.headers import Defects, HeaderIndex, parse_address
from parsers.mime import content_type, param, text_of
from parsers.original import ReportedMessage, make_report, reporter_from, trap_reporter
from schemas import AbuseReport

ATTACHMENT_FORMAT = "forward-attachment"
INLINE_FORMAT = "forward-inline"

_FROM_LABELS = "from|von|de|da|van|från|fra|od|от|feladó|lähettäjä"
_SUBJECT_LABELS = "subject|betreff|objet|asunto|oggetto|onderwerp|assunto|ämne|emne|temat|тема|tárgy|aihe"
_DATE_LABELS = (
    "date|sent|datum|gesendet|envoyé|enviado|fecha|data|inviato|verzonden|skickat|sendt|wysłano|дата"
)
_TO_LABELS = "to|an|à|a|para|aan|till|til|do|кому|címzett|vastaanottaja"
_LABEL = re.compile(
    rf"^[ \t>]*\**[ \t]*(?P<label>{_FROM_LABELS}|{_SUBJECT_LABELS}|{_DATE_LABELS}|{_TO_LABELS}|cc|reply-to)"
    r"[ \t]*\**[ \t]*:[ \t]*\**[ \t]*(?P<value>.*?)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_WROTE = re.compile(
    r"^[ \t>]*(?:On|Am|Le|El|Il|Op)\s+(?P<date>.{4,80}?),?\s+(?P<who>[^\n]{0,200}?<?[\w.+-]+@[\w.-]+>?)\s*"
    r"(?:wrote|schrieb|a écrit|escribió|ha scritto|schreef)\s*:\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_FWD_PREFIX = re.compile(r"^\s*((fwd?|fw|wg|tr|rv|enc|doorst|vs|i)\s*:\s*)+", re.IGNORECASE)
_TAG = re.compile(r"<[^>]{0,2000}>")
_PHISH_RCPT = re.compile(r"^(phish|phishing|fraud)[@+._-]", re.IGNORECASE)


def _label_kind(label: str) -> str:
    label = label.lower()
    for kind, labels in (("from", _FROM_LABELS), ("subject", _SUBJECT_LABELS), ("date", _DATE_LABELS)):
        if label in labels.split("|"):
            return kind
    return "other"


def feedback_type_for_recipient(headers: HeaderIndex) -> str:
    for name in ("delivered-to", "x-original-to", "to"):
        addr = parse_address(headers.get(name), None)
        if addr and addr.address and _PHISH_RCPT.match(addr.address):
            return "fraud"
    return "abuse"


def detect_attachment(ctx: ParseContext) -> bool:
    return ctx.msg.is_multipart() and bool(attached_messages(ctx.msg, ctx, Defects()))


def parse_attachment(ctx: ParseContext) -> list[AbuseReport]:
    defects: list[str] = []
    report_safe = _is_report_safe(ctx)
    if report_safe:
        reporter = trap_reporter(ctx.headers)
        defects.append("SpamAssassin report_safe wrapper: the attached original is the junk")
    else:
        reporter = reporter_from(ctx.headers, ctx.defects)
    junk = innermost(ctx.msg, ctx, ctx.defects)
    reports: list[AbuseReport] = []
    feedback_type = feedback_type_for_recipient(ctx.headers)
    for inner, depth in junk:
        if inner is ctx.msg:
            continue
        if len(reports) >= ctx.limits.max_reports:
            ctx.defects.add(f"more than {ctx.limits.max_reports} attached messages: the rest were skipped")
            break
        notes = list(defects)
        if depth > 1:
            notes.append(f"forward of a forward: the message attached {depth} levels deep is reported")
        reported = ReportedMessage(headers=HeaderIndex.of(inner, ctx.defects), msg=inner)
        reports.append(
            make_report(
                ctx,
                index=len(reports),
                format=ATTACHMENT_FORMAT,
                feedback_type=feedback_type,
                reporter=reporter,
                reported=reported,
                extra_defects=notes,
            )
        )
    return reports


def _is_report_safe(ctx: ParseContext) -> bool:
    for part in ctx.msg.get_payload() if ctx.msg.is_multipart() else []:
        if isinstance(part, Message) and param(part, "x-spam-type") == "original":
            return True
    return False


def _body_text(ctx: ParseContext) -> str:
    plain = html_text = None
    for part in ctx.parts():
        ctype = content_type(part)
        if ctype == "text/plain" and plain is None:
            plain = text_of(part, ctx.limits, ctx.defects, max_bytes=ctx.limits.max_text_scan_bytes)
        elif ctype == "text/html" and html_text is None:
            html_text = text_of(part, ctx.limits, ctx.defects, max_bytes=ctx.limits.max_text_scan_bytes)
    if plain:
        return plain.lstrip("\ufeff")
    if html_text:
        text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", html_text)
        return html.unescape(_TAG.sub("", text))
    return ""


class InlineForward:
    __slots__ = ("body", "date", "sender", "subject")

    def __init__(self, sender: str | None, subject: str | None, date: str | None, body: str) -> None:
        self.sender = sender
        self.subject = subject
        self.date = date
        self.body = body


def find_inline(text: str, outer_subject: str | None) -> InlineForward | None:
    """A forwarded header block (localised labels) or an `On ..., X wrote:` line in `text`."""
    matches = list(_LABEL.finditer(text))
    for index, match in enumerate(matches):
        if _label_kind(match.group("label")) != "from" or not match.group("value"):
            continue
        block = {"from": match.group("value")}
        end = match.end()
        for follower in matches[index + 1 : index + 8]:
            gap = text[end : follower.start()]
            if gap.count("\n") > 2:
                break
            kind = _label_kind(follower.group("label"))
            block.setdefault(kind, follower.group("value"))
            end = follower.end()
        if "subject" in block or "date" in block:
            return InlineForward(block["from"], block.get("subject"), block.get("date"), text[end:])
    wrote = _WROTE.search(text)
    if wrote:
        subject = _FWD_PREFIX.sub("", outer_subject or "") or None
        return InlineForward(wrote.group("who").strip(), subject, wrote.group("date"), text[wrote.end() :])
    return None


def detect_inline(ctx: ParseContext) -> bool:
    return find_inline(_body_text(ctx)[:65536], ctx.headers.get("subject")) is not None


def parse_inline(ctx: ParseContext) -> list[AbuseReport]:
    found = find_inline(_body_text(ctx), ctx.headers.get("subject"))
    if found is None:
        return []
    reported = ReportedMessage(
        headers=HeaderIndex(()),
        text=found.body,
        overrides={"from": found.sender, "subject": found.subject, "date": found.date},
    )
    return [
        make_report(
            ctx,
            index=0,
            format=INLINE_FORMAT,
            feedback_type=feedback_type_for_recipient(ctx.headers),
            reporter=reporter_from(ctx.headers, ctx.defects),
            reported=reported,
            extra_defects=["inline forward: no Received chain, attributed by sender domain and URLs only"],
        )
    ]
