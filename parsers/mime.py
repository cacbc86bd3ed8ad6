"""Bounded MIME access on top of the stdlib parser: loading, walking, decoding and enclosed messages."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import email.utils
import hashlib
import io
import quopri
import re
from collections.abc import Iterator
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32
from typing import Any

from parsers.fastmime import CTYPE_KEY, content_type_of, first_value, header_params, parse_bytes, parse_text
from parsers.headers import Defects, decode_words
from parsers.limits import ParseLimits

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MBOX_FROM = re.compile(rb"^From [^\r\n]*\r?\n")
_BARE_CR = re.compile(rb"\r(?!\n)")
MESSAGE_TYPES = ("message/rfc822", "message/global")


def normalise_bytes(raw: bytes, defects: Defects) -> bytes:
    """Undo what transport and storage do to a message before parsing it."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        defects.add("UTF-8 byte-order mark before the headers: removed")
    if raw.startswith(b"From "):
        match = _MBOX_FROM.match(raw)
        if match:
            raw = raw[match.end() :]
            defects.add("mbox 'From ' line before the headers: removed")
    head = raw[:4096]
    if b"\r" in head and b"\n" not in head:
        raw = raw.replace(b"\r", b"\n")
        defects.add("CR-only line endings: converted")
    else:
        lead = raw.lstrip(b"\r\n\t ")
        if len(lead) != len(raw) and lead[:1] not in (b"",):
            raw = lead
            defects.add("blank lines before the headers: removed")
    return raw


def parse_limited(data: bytes, limits: ParseLimits) -> Message:
    return parse_bytes(data, max_parts=limits.max_parts, max_depth=limits.max_depth)


def content_type(part: Message) -> str:
    # Every detector asks; the stdlib re-parses the header each time, so the answer is kept on the part
    # (the MIME splitter stores it as it parses).
    cached: str | None = part.__dict__.get(CTYPE_KEY)
    if cached is None:
        try:
            cached = content_type_of(part)
        except Exception:  # malformed Content-Type parameters
            cached = "text/plain"
        part.__dict__[CTYPE_KEY] = cached
    return cached


_ABSENT = object()


def _raw_param(part: Message, name: str, header: str) -> object:
    """The parameter as `Message.get_param` returns it, or `_ABSENT` (also for an absent header)."""
    params = header_params(part, header)
    if params is None:
        return _ABSENT
    name = name.lower()
    for key, value in params:
        if key == name:
            return value
    return _ABSENT


def _collapse(value: object) -> str | None:
    """RFC 2231 values (charset, language, text) as one string."""
    if isinstance(value, str):
        return value
    try:
        return str(email.utils.collapse_rfc2231_value(value))  # type: ignore[arg-type]
    except Exception:
        return None


def param(part: Message, name: str, header: str = "content-type") -> str | None:
    value = _raw_param(part, name, header)
    return None if value is _ABSENT else _collapse(value)


def filename(part: Message) -> str | None:
    cached = part.__dict__.get("_abusepipe_filename", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    name = _filename(part)
    part.__dict__["_abusepipe_filename"] = name
    return name


def _filename(part: Message) -> str | None:
    # As `Message.get_filename`: Content-Disposition's filename, else Content-Type's name.
    value = _raw_param(part, "filename", "content-disposition")
    if value is _ABSENT:
        value = _raw_param(part, "name", "content-type")
    if value is _ABSENT:
        return None
    name = _collapse(value)
    if name is None:
        return None
    return (decode_words(name.strip()) or "").strip()[:255] or None


def payload_of(part: Message) -> Any:
    """`part.get_payload()`, which looks up Content-Transfer-Encoding among all the headers on every
    call although only 8-bit text needs it (the stdlib charset-decodes that): an ASCII or list payload
    is returned as is, exactly as the stdlib would."""
    payload = part._payload  # type: ignore[attr-defined]
    if isinstance(payload, str) and not payload.isascii():
        return part.get_payload()
    return payload


def transfer_encoding(part: Message) -> str:
    """Content-Transfer-Encoding in lower case, "" when absent. An ASCII value is read as stored, which is
    what `part.get` returns for it under compat32, without the stdlib's scan that lower-cases every name."""
    value = first_value(part, "content-transfer-encoding") if part.policy is compat32 else None
    if not (isinstance(value, str) and value.isascii()):
        value = part.get("content-transfer-encoding", "")
    return str(value).strip().lower()


def walk(
    msg: Message, limits: ParseLimits, defects: Defects, *, depth: int = 0
) -> Iterator[tuple[Message, int]]:
    """Parts in document order with their nesting depth, without descending into enclosed messages."""
    count = 0
    stack: list[tuple[Message, int]] = [(msg, depth)]
    while stack:
        part, level = stack.pop()
        count += 1
        if count > limits.max_parts:
            defects.add(f"more than {limits.max_parts} MIME parts: the rest were skipped")
            return
        yield part, level
        if not content_type(part).startswith("multipart/"):
            continue  # message/* bodies are parsed as messages too; they are opened explicitly
        payload = payload_of(part)
        if isinstance(payload, list):
            if level + 1 > limits.max_depth:
                defects.add(f"MIME parts nested deeper than {limits.max_depth}: inner parts skipped")
                continue
            stack.extend((child, level + 1) for child in reversed(payload) if isinstance(child, Message))


def leaves(msg: Message, limits: ParseLimits, defects: Defects) -> Iterator[Message]:
    for part, _ in walk(msg, limits, defects):
        if not content_type(part).startswith("multipart/"):
            yield part


class BinaryPart(Message):
    """A leaf part whose decoded bytes are already known (converted from an Outlook .msg).

    Holding the bytes directly avoids a base64 or surrogate-escape round trip through the stdlib, which
    costs more than the rest of the parse for large attachments.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data
        self.set_payload("")


class _StableGenerator(BytesGenerator):
    """The stdlib generator, except that a boundary it must invent (a multipart without one, or one
    found in the body) derives from the content instead of `random`: the same input must always give
    the same attachment hash."""

    @classmethod
    def _make_boundary(cls, text: str | None = None) -> str:
        body = text or ""
        token = hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        boundary, counter = f"==============={token}==", 0
        while f"--{boundary}" in body:
            counter += 1
            boundary = f"==============={token}.{counter}=="
        return boundary


def serialised(msg: Message) -> bytes:
    out = io.BytesIO()
    _StableGenerator(out, mangle_from_=False, policy=msg.policy).flatten(msg, unixfrom=False)
    return out.getvalue()


def decoded(part: Message, limits: ParseLimits, defects: Defects) -> bytes:
    """Decoded body of a leaf part; empty when over `max_decoded_bytes` (with a defect)."""
    if isinstance(part, BinaryPart):
        return part.data[: limits.max_decoded_bytes]
    payload = payload_of(part)
    if isinstance(payload, list):
        try:
            return b"".join(serialised(m) for m in payload if isinstance(m, Message))
        except Exception:  # the stdlib generator chokes on some broken structures: no bytes, a defect
            defects.add(f"{content_type(part)} part could not be re-serialised: not hashed")
            return b""
    if not isinstance(payload, str):
        return b""
    if len(payload) > limits.max_decoded_bytes * 2:
        defects.add(f"part of {len(payload)} bytes not decoded (over the decoded-size limit)")
        return b""
    cte = transfer_encoding(part)
    if cte not in ("base64", "quoted-printable"):
        if cte not in ("", "7bit", "8bit", "binary"):
            defects.add(f"unknown Content-Transfer-Encoding {cte[:40]!r}: body taken as is")
        # The raw 8-bit bytes as received (get_payload() alone would charset-decode them).
        raw = part.get_payload(decode=True)
        out = raw if isinstance(raw, bytes) else _to_bytes(payload)
    else:
        data = _to_bytes(payload)
        try:
            out = _b64decode(data) if cte == "base64" else quopri.decodestring(data)
        except (binascii.Error, ValueError):
            defects.add(f"undecodable {cte} body: taken as is")
            out = data
    if len(out) > limits.max_decoded_bytes:
        defects.add(f"decoded part of {len(out)} bytes is over the limit: truncated")
        out = out[: limits.max_decoded_bytes]
    return out


def _b64decode(data: bytes) -> bytes:
    try:
        return base64.b64decode(data)  # discards line breaks and other non-alphabet bytes itself
    except (binascii.Error, ValueError):
        return base64.b64decode(_b64_fix(data))  # bad padding: repaired


def _to_bytes(payload: str) -> bytes:
    """Bytes of a payload parsed from bytes (surrogate-escaped) or from text (real Unicode)."""
    try:
        return payload.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return payload.encode("utf-8", "surrogateescape")


def _b64_fix(data: bytes) -> bytes:
    data = re.sub(rb"[^A-Za-z0-9+/=]", b"", data)
    body = data.rstrip(b"=")
    return body + b"=" * (-len(body) % 4)


def text_of(part: Message, limits: ParseLimits, defects: Defects, max_bytes: int | None = None) -> str:
    data = decoded(part, limits, defects)
    if max_bytes is not None:
        data = data[:max_bytes]
    charset = (param(part, "charset") or "utf-8").strip().strip('"').lower() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown name, or one with NUL/surrogates in it
        defects.add(f"unknown charset {charset[:40]!r}: decoded as UTF-8")
        return data.decode("utf-8", "replace")


def enclosed_message(part: Message, limits: ParseLimits, defects: Defects) -> Message | None:
    """The message inside a message/rfc822 (or message/global) part, decoding a (non-standard) CTE."""
    payload = payload_of(part)
    inner: Message | None = None
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner = payload[0]
    elif isinstance(payload, str):
        data = decoded(part, limits, defects)
        return (
            parse_bytes(data, max_parts=limits.max_parts, max_depth=limits.max_depth)
            if data.strip()
            else None
        )
    if inner is None:
        return None
    inner = rejoin_split_headers(inner, defects)
    cte = transfer_encoding(part)
    if cte in ("base64", "quoted-printable") and not inner.keys():
        defects.add(f"{content_type(part)} part with Content-Transfer-Encoding {cte}: decoded")
        body = inner.get_payload()
        if isinstance(body, str):
            data = _to_bytes(body)
            try:
                data = base64.b64decode(_b64_fix(data)) if cte == "base64" else quopri.decodestring(data)
            except (binascii.Error, ValueError):
                return None
            return parse_bytes(
                data[: limits.max_decoded_bytes], max_parts=limits.max_parts, max_depth=limits.max_depth
            )
    return inner


_HEADER_LINE = re.compile(
    r"(to|cc|subject|message-id|date|mime-version|content-type|content-transfer-encoding|from|received|"
    r"reply-to|return-path|x-[a-z0-9-]+)[ \t]*:",
    re.IGNORECASE,
)


def rejoin_split_headers(msg: Message, defects: Defects) -> Message:
    """Undo a stray blank line inside a header block (seen in real reports): the body starts with headers."""
    body = payload_of(msg)
    if not isinstance(body, str) or msg.is_multipart():
        return msg
    lines = body.lstrip("\r\n").splitlines()[:3]
    if len(lines) < 2 or not all(_HEADER_LINE.match(line) for line in lines[:2]):
        return msg
    head = "".join(f"{k}: {v}\n" for k, v in msg.raw_items())
    defects.add("blank line inside the header block of the enclosed message: headers rejoined")
    return parse_text(head + body.lstrip("\r\n"))
