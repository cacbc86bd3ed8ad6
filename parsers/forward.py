"""Forwards to an abuse mailbox: attached messages (one report per junk mail) and inline forwards."""

from __future__ import annotations

import html
import re
from email.message import Message

from parsers.attached import attached_messages, innermost
from parsers.context import ParseContext
from parsers.headers import HeaderIndex, parse_address
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
# Every pattern here runs on attacker-controlled text: one character class per run of blanks and no
# nested or adjacent unbounded quantifiers, so matching stays linear in the text.
_LABEL = re.compile(
    rf"[ \t>*]*(?P<label>{_FROM_LABELS}|{_SUBJECT_LABELS}|{_DATE_LABELS}|{_TO_LABELS}|cc|reply-to)"
    r"[ \t*]*:(?P<value>.*)",
    re.IGNORECASE,
)
_WROTE = re.compile(
    r"^[ \t>]*(?:On|Am|Le|El|Il|Op)[ \t](?P<line>[^\r\n]{4,400}?)(?:wrote|schrieb|a écrit|escribió|"
    r"ha scritto|schreef)[ \t]*:[ \t]*\r?$",
    re.IGNORECASE | re.MULTILINE,
)
_WHO = re.compile(r"<?[\w.+-]+@[\w-]+(?:\.[\w-]+)+>?")
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
    return ctx.msg.is_multipart() and bool(attached_messages(ctx.msg, ctx, ctx.defects))


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


def _value(match: re.Match[str]) -> str:
    return match.group("value").strip(" \t*")


def find_inline(text: str, outer_subject: str | None) -> InlineForward | None:
    """A forwarded header block (localised labels) or an `On ..., X wrote:` line in `text`."""
    lines = text.splitlines()
    # (line number, label kind, value) of each label line; only lines with an early colon can be one.
    labels = []
    for number, line in enumerate(lines):
        colon = line.find(":", 0, 40)
        if colon < 0:
            continue
        match = _LABEL.match(line)
        if match:
            labels.append((number, _label_kind(match.group("label")), _value(match)))
    for index, (number, kind, value) in enumerate(labels):
        if kind != "from" or not value:
            continue
        block = {"from": value}
        last = number
        for follower, follower_kind, follower_value in labels[index + 1 : index + 8]:
            if follower - last > 2:
                break
            block.setdefault(follower_kind, follower_value)
            last = follower
        if "subject" in block or "date" in block:
            body = "\n".join(lines[last + 1 :])
            return InlineForward(block["from"], block.get("subject"), block.get("date"), body)
    for wrote in _WROTE.finditer(text):
        line = wrote.group("line")
        who = _WHO.search(line)
        if who is None:
            continue
        date = line[: who.start()].rstrip(' ,"') or None
        name_start = date.rfind(",") if date else -1
        if date and name_start > 0:
            date = date[:name_start].strip()  # "28/10/2021 12:46, "John Doe"": the name is not the date
        subject = _FWD_PREFIX.sub("", outer_subject or "") or None
        return InlineForward(line[: who.end()].strip(), subject, date, text[wrote.end() :])
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
