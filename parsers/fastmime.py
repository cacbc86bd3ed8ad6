"""A lenient MIME splitter that builds the same compat32 `Message` tree as the stdlib parser, faster.

The stdlib `FeedParser` looks at every body line in Python, which dominates parsing time on real mail
(long HTML bodies, base64 attachments). Here only header blocks go through the stdlib (`HeaderParser`);
boundaries and header/body separators are found with compiled regular expressions over the whole text.
Bodies stay surrogate-escaped strings with their original line endings, exactly as compat32 keeps them,
so everything downstream (`get_payload(decode=True)`, `get_content_type()`, ...) behaves the same.

Leniency follows the stdlib: a multipart without its boundary keeps its body as text, a missing closing
boundary ends the last part at the end of the input, and each tolerated fault is recorded as the same
`email.errors` defect on the part.
"""

from __future__ import annotations

import re
from email import errors, utils
from email.message import Message
from email.policy import compat32


class NestingTooDeepDefect(errors.MessageDefect):
    """Parts nested deeper than the limit were kept as text, not parsed."""


class TooManyPartsDefect(errors.MessageDefect):
    """Parts beyond the limit were dropped."""


class PartBudget:
    """How many more parts the splitter may create, and whether a limit was hit."""

    __slots__ = ("exhausted", "parts_left", "too_deep")

    def __init__(self, max_parts: int) -> None:
        self.parts_left = max_parts
        self.exhausted = False
        self.too_deep = False

    def take(self) -> bool:
        if self.parts_left <= 0:
            self.exhausted = True
            return False
        self.parts_left -= 1
        return True


def parse_bytes(data: bytes, *, max_parts: int = 500, max_depth: int = 8) -> Message:
    return parse_text(data.decode("ascii", "surrogateescape"), max_parts=max_parts, max_depth=max_depth)


def parse_text(text: str, *, max_parts: int = 500, max_depth: int = 8) -> Message:
    budget = PartBudget(max_parts)
    budget.take()
    msg = _parse(text, depth=0, max_depth=max_depth, budget=budget)
    if budget.too_deep:
        msg.defects.append(
            NestingTooDeepDefect(f"MIME parts nested deeper than {max_depth}: inner parts kept as text")
        )
    if budget.exhausted:
        msg.defects.append(TooManyPartsDefect(f"more than {max_parts} MIME parts: the rest were dropped"))
    return msg


# The stdlib's rule for what may start a header line (email.feedparser.headerRE).
_HEADER_START = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])")
_BLANK = ("\n", "\r\n", "\r")


def _header_end(text: str) -> int:
    """A position the first blank line ends before (or the text's length): only the text before it is
    split into lines, never a body. Each pair found starts a blank line (a `\r\n` line break counts once),
    so the first of them is at or after the first blank line."""
    end = len(text)
    for pair in ("\n\r", "\n\n", "\r\r"):
        found = text.find(pair, 0, end)
        if found >= 0:
            end = found
    return min(end + 3, len(text))


_PARAMS_KEY = "_abusepipe_params"
Param = str | tuple[str, str, str]


def header_params(part: Message, header: str) -> list[tuple[str, Param]] | None:
    """The header's parameters (`Message.get_params`, unquoted, keys in lower case), parsed once per part
    and header: the stdlib parses the whole header again for every `get_param`. None when the header is
    absent. `header` is in lower case."""
    cache: dict[str, list[tuple[str, Param]] | None] = part.__dict__.setdefault(_PARAMS_KEY, {})
    if header not in cache:
        cache[header] = _params(part, header)
    return cache[header]


_UNREAD = object()


def _params(part: Message, header: str, value: object = _UNREAD) -> list[tuple[str, Param]] | None:
    """`value`: the header's first value when the caller has looked it up already."""
    if part.policy is compat32:
        if value is _UNREAD:
            value = first_value(part, header)
        if value is None:
            return None
        if isinstance(value, str):
            simple = _simple_params(value)
            if simple is not None:
                return simple
    found: list[tuple[str, Param]] | None
    try:
        # typeshed says str values; RFC 2231 parameters come back as (charset, language, text)
        found = part.get_params(header=header)  # type: ignore[assignment]
    except Exception:  # hostile parameters: as if there were none
        found = None
    return [(key.lower(), value) for key, value in found] if found is not None else None


def first_value(part: Message, header: str) -> object:
    """The first `header` field's value as stored (`Message.get` before the policy sees it), or None."""
    size = len(header)
    for name, value in part._headers:  # type: ignore[attr-defined]
        if len(name) == size and name.lower() == header:  # most names differ in length: no lower()
            return value
    return None


# What only the stdlib's general path reads right: RFC 2231 names (`*`), backslash escapes, values in
# angle brackets (which its unquoting strips).
_PARAMS_SLOW = re.compile(r"[*\\<]")


def _simple_params(value: str) -> list[tuple[str, Param]] | None:
    """`Message.get_params` of a compat32 value, for values of the common shape: ASCII (no surrogate, so
    the policy hands it over unchanged), none of `_PARAMS_SLOW`, and no `;` inside quotes. None for any
    other value. The same steps as `_parseparam`, `decode_params` and `_unquotevalue`, without the
    general cases; tests/test_fast_paths.py holds it to the stdlib's answers."""
    if not value.isascii() or _PARAMS_SLOW.search(value):
        return None
    params: list[tuple[str, Param]] = []
    for index, segment in enumerate(value.split(";")):
        if segment.count('"') % 2:
            return None  # a `;` inside a quoted string: the stdlib joins the segments
        equals = segment.find("=")
        if equals >= 0:
            name, text = segment[:equals].strip(), segment[equals + 1 :].strip()
        else:
            name, text = segment.strip(), ""
        if len(text) > 1 and text[0] == '"' and text[-1] == '"':
            text = text[1:-1]
        if index and '"' in text:
            return None  # decode_params quotes it again and unquoting changes it: the general path
        params.append((name.lower(), text))
    return params


def content_type_of(msg: Message, value: object = _UNREAD) -> str:
    """`Message.get_content_type` (which may raise on odd values, as the stdlib's does). `value`: the
    first Content-Type value when the caller has looked it up already."""
    if msg.policy is compat32:
        if value is _UNREAD:
            value = first_value(msg, "content-type")
        if value is None:
            return msg.get_default_type()
        if isinstance(value, str) and value.isascii():
            ctype = value.partition(";")[0].strip().lower()
            return ctype if ctype.count("/") == 1 else "text/plain"
    return msg.get_content_type()


CTYPE_KEY = "_abusepipe_ctype"
"""Where a part's content type is kept once computed (`parsers.mime.content_type` reads it)."""


# A header block of well-formed fields (a name, a colon, continuation lines) ended by a blank line or by
# the end of the text (as the fields of an ARF feedback part are), as nearly every real one is: split by
# two regular expressions, with the same results as the line rules below, which read everything else.
_EOL = r"(?:\r\n|\n|\r(?!\n))"  # a CRLF is one line break, never a CR and then a blank line
# A line's text: no line break of `str.splitlines` (CR, LF and the odd ones, VT FF FS GS RS NEL LS PS),
# so that a block holding an odd one is not well formed and the line rules, which split there, read it.
_TEXT = "[^\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]*"
_FIELD = rf"[!-9;-~]+:{_TEXT}{_EOL}(?:[ \t]{_TEXT}{_EOL})*"
# Possessive: a block is read one way only, so a text that is not one fails without backtracking.
_WELL_FORMED = re.compile(rf"(?:{_FIELD})*+(?:{_EOL}|(?:[!-9;-~]+:{_TEXT})?\Z)")
_FIELDS = re.compile(rf"([!-9;-~]+):[ \t]*([^\r\n]*(?:{_EOL}[ \t][^\r\n]*)*)")


def _split_headers(text: str) -> tuple[Message, str]:
    """Header block parsed by the stdlib's line rules (compat32 `header_source_parse`), and the body."""
    block = _WELL_FORMED.match(text)
    if block is not None:
        msg = Message()
        msg._headers = _FIELDS.findall(text, 0, block.end())  # type: ignore[attr-defined]
        return msg, text[block.end() :]
    return _split_header_lines(text)


def _split_header_lines(text: str) -> tuple[Message, str]:
    """The stdlib's line rules, one line at a time, with the defects it records."""
    msg = Message()
    lines = text[: _header_end(text)].splitlines(keepends=True)
    # What `Message.set_raw` appends to, without a method call per header.
    headers: list[tuple[str, str]] = msg._headers  # type: ignore[attr-defined]
    name: str | None = None
    value: list[str] = []
    offset = 0  # where `line` starts in `text`
    for index, line in enumerate(lines):
        if line in _BLANK:
            if name is not None:
                headers.append((name, "".join(value).rstrip("\r\n")))
            return msg, text[offset + len(line) :]
        first = line[0]
        if first in " \t":
            if name is None:
                msg.defects.append(errors.FirstHeaderLineIsContinuationDefect(line))
            else:
                value.append(line)
            offset += len(line)
            continue
        if not _HEADER_START.match(line):
            if name is not None:
                headers.append((name, "".join(value).rstrip("\r\n")))
            msg.defects.append(errors.MissingHeaderBodySeparatorDefect())
            return msg, text[offset:]
        if name is not None:
            headers.append((name, "".join(value).rstrip("\r\n")))
            name = None
        offset += len(line)
        if line.startswith("From "):
            if index == 0:
                msg.set_unixfrom(line.rstrip("\r\n"))
            else:
                msg.defects.append(errors.MisplacedEnvelopeHeaderDefect(line))
            continue
        colon = line.find(":")
        if colon == 0:
            msg.defects.append(errors.InvalidHeaderDefect(f"Missing header name in {line!r}"))
            continue
        name = line[:colon]
        value = [line[colon + 1 :].lstrip(" \t")]
    if name is not None:
        headers.append((name, "".join(value).rstrip("\r\n")))
    return msg, ""


def _parse(text: str, *, depth: int, max_depth: int, budget: PartBudget) -> Message:
    msg, body = _split_headers(text)
    value = first_value(msg, "content-type")
    try:
        ctype = content_type_of(msg, value)
    except Exception:  # malformed Content-Type: the stdlib falls back to text/plain as well
        ctype = "text/plain"
    msg.__dict__[CTYPE_KEY] = ctype
    # Nearly every part's Content-Type parameters are asked for (boundary, charset, name): parsed now,
    # from the value just found, instead of looking the header up again.
    msg.__dict__[_PARAMS_KEY] = {"content-type": _params(msg, "content-type", value)}
    maintype = ctype.split("/", 1)[0]
    if maintype in ("multipart", "message") and depth >= max_depth:
        budget.too_deep = True
        msg.set_payload(body)
    elif maintype == "multipart":
        _parse_multipart(msg, body, depth=depth, max_depth=max_depth, budget=budget)
    elif ctype == "message/delivery-status":
        # As the stdlib: blocks of status fields separated by blank lines, each a header-only message.
        blocks = [block for block in re.split(r"(?:\r?\n){2,}", body) if block.strip()]
        fields: list[Message | str] = [_split_headers(block + "\n")[0] for block in blocks[:50]]
        for block_msg in fields:
            if isinstance(block_msg, Message):
                block_msg.set_payload("")
        msg.set_payload(fields)
    elif maintype == "message" and budget.take():
        msg.set_payload([_parse(body, depth=depth + 1, max_depth=max_depth, budget=budget)])
    else:
        msg.set_payload(body)
    return msg


def _parse_multipart(msg: Message, body: str, *, depth: int, max_depth: int, budget: PartBudget) -> None:
    boundary = _boundary(msg)
    if not boundary:
        msg.defects.append(errors.NoBoundaryInMultipartDefect())
        msg.set_payload(body)
        return
    matches = _delimiters(body, "--" + boundary)
    if not matches or matches[0][2]:  # no opening delimiter (a close delimiter alone does not open)
        msg.defects.append(errors.StartBoundaryNotFoundDefect())
        msg.set_payload(body)
        return
    msg.preamble = _strip_eol(body[: matches[0][0]]) or None
    children: list[Message | str] = []
    closed = False
    for index, (_, after, is_close) in enumerate(matches):
        if is_close:
            closed = True
            msg.epilogue = body[after:] or None
            break
        if not budget.take():
            break
        # The line break before a delimiter belongs to it; an unterminated last part keeps its own.
        chunk = _strip_eol(body[after : matches[index + 1][0]]) if index + 1 < len(matches) else body[after:]
        child = _parse(chunk, depth=depth + 1, max_depth=max_depth, budget=budget)
        children.append(child)
    if not closed and not budget.exhausted:
        msg.defects.append(errors.CloseBoundaryNotFoundDefect())
    msg.set_payload(children)


def _boundary(msg: Message) -> str | None:
    """`Message.get_boundary`, from the parameters parsed once per part (`parsers.mime` reads the same)."""
    for key, value in header_params(msg, "content-type") or ():
        if key == "boundary":
            try:
                return str(utils.collapse_rfc2231_value(value)).rstrip()
            except Exception:  # as a failing get_boundary: no boundary
                return None
    return None


def _delimiters(body: str, marker: str) -> list[tuple[int, int, bool]]:
    """(start, end, is_close) of each delimiter line: at a line start, then only `--` and blanks."""
    out: list[tuple[int, int, bool]] = []
    position = body.find(marker)
    size = len(body)
    while position >= 0:
        if position == 0 or body[position - 1] in "\r\n":
            cursor = position + len(marker)
            is_close = body.startswith("--", cursor)
            if is_close:
                cursor += 2
            while cursor < size and body[cursor] in " \t":
                cursor += 1
            if cursor >= size or body[cursor] in "\r\n":
                if body.startswith("\r\n", cursor):
                    cursor += 2
                elif cursor < size:
                    cursor += 1
                out.append((position, cursor, is_close))
                if is_close:
                    break
        position = body.find(marker, position + 1)
    return out


def _strip_eol(text: str) -> str:
    """The line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1)."""
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\n", "\r")):
        return text[:-1]
    return text
