"""Forwards to an abuse mailbox: attached messages (one report per junk mail) and inline forwards."""

from __future__ import annotations

import html
import re
from email.message import Message

from parsers.attached import attached_messages, innermost
from parsers.context import ParseContext
from parsers.headers import HeaderIndex, parse_address
from parsers.mime import MESSAGE_TYPES, content_type, param, text_of
from parsers.original import ReportedMessage, make_report, reporter_from, trap_reporter
from parsers.received import parse_received
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
    if content_type(ctx.msg) in MESSAGE_TYPES:
        defects.append(f"the whole mail is the forwarded message ({content_type(ctx.msg)} at the top)")
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
    __slots__ = ("body", "date", "headers", "sender", "subject")

    def __init__(
        self,
        sender: str | None,
        subject: str | None,
        date: str | None,
        body: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.sender = sender
        self.subject = subject
        self.date = date
        self.body = body
        self.headers = headers
        """The original header block, when the forward carries one with its Received lines."""


_QUOTE = re.compile(r"^(?:[ \t]*>)*[ \t]?")
_HEADER_LINE = re.compile(r"([!-9;-~]{1,76})[ \t]*:[ \t]*(.*)")
_RECEIVED_LINE = re.compile(r"^(?:[ \t]*>)*[ \t]*received[ \t]*:", re.IGNORECASE | re.MULTILINE)
MAX_BLOCK_LINES = 400


def find_header_block(text: str) -> InlineForward | None:
    """A forwarded message's whole header block written into the body, with its Received lines: what
    Thunderbird writes with all headers shown (`Received: <tab>from ...`, folded lines indented), Pine
    and Alpine forwarding with full headers, a header block pasted below `-----Original Message-----`.
    Lines may be quoted (`> `) and soft-wrapped (format=flowed). None without a Received line."""
    if _RECEIVED_LINE.search(text) is None:
        return None
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if _RECEIVED_LINE.match(line)), None)
    if at is None:
        return None
    quote = _QUOTE.match(lines[at])
    prefix = quote.group(0) if quote else ""
    # The block runs from the blank line (or separator) above it to the blank line below it: every line
    # in between is a field or continues the previous one (indented, soft-wrapped, or wrapped by hand).
    start = at
    while start > 0 and at - start < MAX_BLOCK_LINES and _block_line(lines[start - 1], prefix):
        start -= 1
    end = at + 1
    while end < len(lines) and end - start < MAX_BLOCK_LINES and _block_line(lines[end], prefix):
        end += 1
    headers: list[tuple[str, str]] = []
    for index in range(start, end):
        line = _unquote(lines[index], prefix)
        match = _HEADER_LINE.fullmatch(line)
        if match and not line[:1].isspace():
            headers.append((match.group(1), match.group(2).strip()))
        elif headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
    if not any(name.lower() == "received" and _is_received(value) for name, value in headers):
        return None  # "Received: yes, thanks" in someone's text is not a header block
    fields = {name.lower(): value for name, value in reversed(headers)}  # the first of each name wins
    body = "\n".join(_unquote(line, prefix) for line in lines[end:])
    return InlineForward(fields.get("from"), fields.get("subject"), fields.get("date"), body, headers)


def _is_received(value: str) -> bool:
    hop = parse_received(value)
    return hop.from_ip is not None or (hop.by_host is not None and hop.from_host is not None)


def _unquote(line: str, prefix: str) -> str:
    return line[len(prefix) :] if prefix and line.startswith(prefix) else line


_SEPARATOR = re.compile(r"[ \t]*(?:[-_=*]{3,}.*|.*[-_=*]{3,}[ \t]*)")


def _block_line(line: str, prefix: str) -> bool:
    """Inside the header block: not blank, not a separator such as `-------- Forwarded Message --------`."""
    if prefix and not line.startswith(prefix.rstrip()):
        return False
    line = _unquote(line, prefix)
    return bool(line.strip()) and not _SEPARATOR.fullmatch(line)


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


def _inline(text: str, subject: str | None) -> InlineForward | None:
    return find_header_block(text) or find_inline(text, subject)


def detect_inline(ctx: ParseContext) -> bool:
    return _inline(_body_text(ctx)[:65536], ctx.headers.get("subject")) is not None


def parse_inline(ctx: ParseContext) -> list[AbuseReport]:
    found = _inline(_body_text(ctx), ctx.headers.get("subject"))
    if found is None:
        return []
    if found.headers is not None:
        # The forwarded header block: attributed from its Received lines as an attached message is.
        reported = ReportedMessage(headers=HeaderIndex(found.headers[:1000], ctx.defects), text=found.body)
        note = "inline forward with the original header block: attributed from its Received lines"
    else:
        reported = ReportedMessage(
            headers=HeaderIndex(()),
            text=found.body,
            overrides={"from": found.sender, "subject": found.subject, "date": found.date},
        )
        note = "inline forward: no Received chain, attributed by sender domain and URLs only"
    return [
        make_report(
            ctx,
            index=0,
            format=INLINE_FORMAT,
            feedback_type=feedback_type_for_recipient(ctx.headers),
            reporter=reporter_from(ctx.headers, ctx.defects),
            reported=reported,
            extra_defects=[note],
        )
    ]
