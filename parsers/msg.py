"""Outlook `.msg` files (OLE2 compound documents) converted to `email.message.Message`.

Hand-written on olefile: the only maintained full readers (extract-msg) are GPL-3.0. Only what an abuse
desk needs is read: transport headers (`PR_TRANSPORT_MESSAGE_HEADERS`), subject, sender, message id,
bodies, and attachments, including embedded `.msg` messages.
"""

from __future__ import annotations

import email
import email.policy
from email.message import Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from io import BytesIO

import olefile

from parsers.headers import Defects
from parsers.limits import ParseLimits
from parsers.mime import BinaryPart

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_CONTENT_HEADERS = {"content-type", "content-transfer-encoding", "mime-version", "content-disposition"}
# Property ids (PidTag...), without the type suffix.
TRANSPORT_HEADERS = "007D"
SUBJECT = "0037"
BODY = "1000"
HTML = "1013"
INTERNET_MESSAGE_ID = "1035"
SENDER_SMTP = "5D01"
SENDER_EMAIL = "0C1F"
SENDER_NAME = "0C1A"
ATTACH_LONG_FILENAME = "3707"
ATTACH_FILENAME = "3704"
ATTACH_DATA = "3701"
ATTACH_MIME = "370E"


class MsgError(ValueError):
    """The bytes are not a readable Outlook message."""


def is_msg(data: bytes) -> bool:
    return data[:8] == OLE_MAGIC


def msg_to_message(data: bytes, limits: ParseLimits, defects: Defects) -> Message:
    try:
        ole = olefile.OleFileIO(BytesIO(data))
    except (OSError, ValueError, IndexError) as exc:
        raise MsgError(f"not a readable Outlook .msg ({exc})") from exc
    try:
        return _convert(ole, [], limits, defects, depth=0)
    except (OSError, ValueError, IndexError, KeyError) as exc:
        raise MsgError(f"damaged Outlook .msg ({type(exc).__name__}: {exc})") from exc
    finally:
        ole.close()


def _read(ole: olefile.OleFileIO, prefix: list[str], prop: str, limits: ParseLimits) -> str | bytes | None:
    for suffix, kind in (("001F", "unicode"), ("001E", "ansi"), ("0102", "binary")):
        path = [*prefix, f"__substg1.0_{prop}{suffix}"]
        if ole.exists("/".join(path)):
            size = ole.get_size("/".join(path))
            if size > limits.max_decoded_bytes:
                return None
            raw = _stream(ole, path, size)
            if kind == "unicode":
                return raw.decode("utf-16-le", "replace").rstrip("\x00")
            if kind == "ansi":
                return raw.decode("cp1252", "replace").rstrip("\x00")
            return bytes(raw)
    return None


_END_OF_CHAIN = 0xFFFFFFFE


def _stream(ole: olefile.OleFileIO, path: list[str], size: int) -> bytes:
    """A stream's bytes. Large streams are sliced from the file in contiguous sector runs: olefile reads
    them one 512-byte sector at a time in Python, which costs more than everything else on a multi-MB
    attachment. Any irregularity falls back to olefile's own reader."""
    if size >= ole.minisectorcutoff and isinstance(ole.fp, BytesIO):
        try:
            return _fat_stream(ole, path, size)
        except (IndexError, ValueError, KeyError, AttributeError, TypeError):
            pass
    data: bytes = ole.openstream(path).read()
    return data


def _fat_stream(ole: olefile.OleFileIO, path: list[str], size: int) -> bytes:
    buffer = ole.fp.getbuffer()
    fat = ole.fat
    sector_size = ole.sectorsize
    sector = ole.direntries[ole._find(path)].isectStart
    chunks: list[bytes] = []
    remaining = size
    for _ in range(len(fat) + 1):  # a chain longer than the FAT is a loop
        if remaining <= 0:
            return b"".join(chunks)
        if sector == _END_OF_CHAIN or sector >= len(fat):
            raise ValueError("FAT chain ends early")
        first = sector
        run = 1
        while run * sector_size < remaining and fat[sector] == sector + 1:
            sector += 1
            run += 1
        take = min(run * sector_size, remaining)
        offset = (first + 1) * sector_size
        chunk = bytes(buffer[offset : offset + take])
        if len(chunk) < take:
            raise ValueError("stream runs past the end of the file")
        chunks.append(chunk)
        remaining -= take
        sector = fat[sector]
    raise ValueError("FAT chain loops")


def _text(ole: olefile.OleFileIO, prefix: list[str], prop: str, limits: ParseLimits) -> str | None:
    value = _read(ole, prefix, prop, limits)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _convert(
    ole: olefile.OleFileIO, prefix: list[str], limits: ParseLimits, defects: Defects, depth: int
) -> Message:
    outer = MIMEMultipart("mixed")
    del outer["MIME-Version"]
    headers_text = _text(ole, prefix, TRANSPORT_HEADERS, limits)
    if headers_text:
        parsed = email.message_from_string(headers_text.lstrip() + "\n\n", policy=email.policy.compat32)
        for name, value in parsed.raw_items():
            if name.lower() not in _CONTENT_HEADERS:
                outer[name] = value
    else:
        defects.add("Outlook .msg without transport headers: no Received chain")
        subject = _text(ole, prefix, SUBJECT, limits)
        sender = _text(ole, prefix, SENDER_SMTP, limits) or _text(ole, prefix, SENDER_EMAIL, limits)
        display = _text(ole, prefix, SENDER_NAME, limits)
        msgid = _text(ole, prefix, INTERNET_MESSAGE_ID, limits)
        if subject:
            outer["Subject"] = subject
        if sender and "@" in sender:
            outer["From"] = f'"{display}" <{sender}>' if display else sender
        if msgid:
            outer["Message-ID"] = msgid
    outer["MIME-Version"] = "1.0"
    body = _text(ole, prefix, BODY, limits)
    if body:
        outer.attach(_binary_part("text/plain; charset=utf-8", body.encode("utf-8")))
    html = _read(ole, prefix, HTML, limits)
    if html:
        html_bytes = html if isinstance(html, bytes) else html.encode("utf-8")
        outer.attach(_binary_part("text/html; charset=utf-8", html_bytes))
    for storage in _attachments(ole, prefix):
        if len(outer.get_payload()) >= limits.max_parts:
            defects.add("Outlook .msg with too many attachments: the rest were skipped")
            break
        embedded = [*storage, "__substg1.0_3701000D"]
        if ole.exists("/".join(embedded)):
            if depth + 1 > limits.max_depth:
                defects.add("Outlook .msg nested too deep: inner message skipped")
                continue
            outer.attach(MIMEMessage(_convert(ole, embedded, limits, defects, depth + 1)))
            continue
        data = _read(ole, storage, ATTACH_DATA, limits)
        if not isinstance(data, bytes):
            continue
        filename = _text(ole, storage, ATTACH_LONG_FILENAME, limits) or _text(
            ole, storage, ATTACH_FILENAME, limits
        )
        mime = _text(ole, storage, ATTACH_MIME, limits) or "application/octet-stream"
        if "/" not in mime or any(c in mime for c in ";\r\n"):
            mime = "application/octet-stream"
        part = _binary_part(mime.strip(), data)
        if filename:
            part.add_header("Content-Disposition", "attachment", filename=filename)
        outer.attach(part)
    return outer


def _binary_part(content_type: str, data: bytes) -> Message:
    part = BinaryPart(data)
    part["Content-Type"] = content_type
    part["Content-Transfer-Encoding"] = "binary"
    return part


def _attachments(ole: olefile.OleFileIO, prefix: list[str]) -> list[list[str]]:
    seen: dict[str, list[str]] = {}
    depth = len(prefix)
    for entry in ole.listdir(streams=True, storages=True):
        if len(entry) > depth and entry[:depth] == prefix and entry[depth].startswith("__attach_version1.0_"):
            seen.setdefault(entry[depth], [*prefix, entry[depth]])
    return [seen[key] for key in sorted(seen)]
