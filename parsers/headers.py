"""Lenient header access: decoding, unfolding and address parsing that record defects, never raise."""

from __future__ import annotations

import binascii
import logging
import re
from collections.abc import Iterable, Iterator
from email.message import Message
from functools import cache, lru_cache
from typing import Any

_FOLD = re.compile(r"\r?\n[ \t]*|\r[ \t]*")
"""A line break and the blanks after it: what unfolding turns into one space (`unfold` does it without
the regex; tests/test_fast_paths.py holds the two to the same answers)."""
_ANGLE = re.compile(r"<([^<>\s]+)>")


class Defects:
    """Collects what was wrong with an input and how it was tolerated (kept in order, deduplicated)."""

    def __init__(self) -> None:
        self._items: dict[str, None] = {}

    def add(self, text: str) -> None:
        self._items.setdefault(text, None)

    def extend(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.add(text)

    def list(self) -> list[str]:
        return list(self._items)


_KEYS: dict[str, str] = {}
"""Header names as written -> as looked up (stripped, lower case): one dict lookup per field instead of
two string methods, for the few hundred names real mail uses."""
_MAX_KEYS = 4096


class HeaderIndex:
    """Unfolded header values by lower-case name, in message order (newest `Received` first)."""

    __slots__ = ("_by_name", "order")

    def __init__(self, items: Iterable[tuple[str, str]], defects: Defects | None = None) -> None:
        by_name: dict[str, list[str]] = {}
        order: list[tuple[str, str]] = []
        for name, raw in items:
            value = raw if raw.__class__ is str else str(raw)
            value = unfold(value) if "\n" in value or "\r" in value else value.strip()
            if not value.isascii() and _SURROGATE.search(value):
                if defects is not None:
                    what = "decoded as UTF-8 with replacement"
                    defects.add(f"raw 8-bit bytes in header {name.strip()}: {what}")
                value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            key = _KEYS.get(name)
            if key is None:
                key = name.strip().lower()
                if len(_KEYS) < _MAX_KEYS:  # junk mail invents names without end: the cache is bounded
                    _KEYS[name] = key
            values = by_name.get(key)
            if values is None:
                by_name[key] = [value]
            else:
                values.append(value)
            order.append((key, value))
        self._by_name = by_name
        self.order = order

    @classmethod
    def of(cls, msg: Message, defects: Defects | None = None) -> HeaderIndex:
        return cls(msg.raw_items(), defects)

    def get(self, name: str) -> str | None:
        values = self._by_name.get(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return self._by_name.get(name, [])

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def names(self) -> Iterable[str]:
        return self._by_name.keys()


def unfold(value: str) -> str:
    """The value on one line: each line break (CRLF, LF or a lone CR) and the blanks after it become one
    space. String methods instead of `_FOLD.sub`: under half its time, and most headers of real mail are
    folded (Received, DKIM-Signature, Authentication-Results)."""
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    elif "\n" not in value:
        return value.strip()
    first, *rest = value.split("\n")
    return " ".join([first, *[line.lstrip(" \t") for line in rest]]).strip()


_SURROGATE = re.compile("[\udc80-\udcff]")
_WORD = re.compile(r"=\?([^?\s]*)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)[ \t]+(=\?)")


def decode_words(value: str | None, defects: Defects | None = None) -> str | None:
    """Decode RFC 2047 encoded-words leniently (bad base64, unknown or broken charsets never raise).

    Written by hand rather than with `email.header` because that raises on the malformed words junk mail
    is full of, and a decoder that falls back per word keeps the readable parts.
    """
    if value is None or "=?" not in value:
        return value
    if not _WORD.search(value):
        return value
    value = _BETWEEN_WORDS.sub(r"\1\2", value)  # whitespace between adjacent words is not content
    problems: list[str] = []

    def one(match: re.Match[str]) -> str:
        charset, encoding, text = match.group(1), match.group(2).lower(), match.group(3)
        charset = charset.split("*", 1)[0].strip().lower() or "us-ascii"  # RFC 2231 language suffix
        try:
            if encoding == "b":
                text = text.rstrip("=")
                if len(text) % 4 == 1:
                    text = text[:-1]  # a truncated word: the last 6 bits cannot form a byte
                data = binascii.a2b_base64(text + "=" * (-len(text) % 4))
            else:
                data = binascii.a2b_qp(text.replace("_", " ").encode("ascii", "replace"), header=True)
        except (binascii.Error, ValueError):
            problems.append("undecodable encoded-word: kept as is")
            return match.group(0)
        try:
            return data.decode(charset, "replace")
        except (LookupError, ValueError):
            problems.append(f"unknown charset {charset[:30]!r} in an encoded-word: decoded as UTF-8")
            return data.decode("utf-8", "replace")

    out = _WORD.sub(one, value)
    if defects is not None:
        defects.extend(problems)
    return out


def message_id(value: str | None) -> str | None:
    """Message-ID without angle brackets (or the bare token when brackets are missing)."""
    if not value:
        return None
    match = _ANGLE.search(value)
    if match:
        return match.group(1)
    token = value.strip().split()
    return token[0] if token else None


class ParsedAddress:
    __slots__ = ("address", "domain", "name")

    def __init__(self, address: str | None, domain: str | None, name: str | None) -> None:
        self.address = address
        self.domain = domain
        self.name = name


@cache
def _flanker() -> Any:
    """flanker's address parser, imported on first use: it costs more to import (ply grammars, its MIME
    stack) than a one-message process spends on everything else, and most addresses never need it."""
    # flanker builds ply parsers at import time and logs grammar warnings, and its lexer logs every
    # address it cannot tokenise (setting its own level); both are noise to users, so they are silenced.
    logging.getLogger("flanker").setLevel(logging.ERROR)
    from flanker.addresslib import address  # noqa: PLC0415

    for name in (
        "flanker.addresslib._parser.lexer",
        "flanker.addresslib._parser.parser",
        "flanker.addresslib.address",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    return address


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
# flanker's lexer also takes any non-ASCII character but a surrogate into an atom (RFC 6532 local parts):
# `_UTEXT` is atext plus those, written as what it is not (a class of the large ranges costs ~10 ms to
# compile, paid by every one-message process). Their whitespace and control characters are refused after
# the match (`_plain`): flanker lexes those differently from `str.split` (an atom character, or an error
# that sends it to its fallback). Domains stay ASCII: flanker IDNA-checks the others.
_UTEXT = r'[^\x00-\x20"(),.:;<>@\[\\\]\x7f\ud800-\udfff]'
_LOCAL = rf"{_UTEXT}+(?:\.{_UTEXT}+)*"
_DOMAIN = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_ANGLED = rf"<[ \t]*({_LOCAL})@({_DOMAIN})[ \t]*>"  # flanker's addr-spec takes whitespace around it
_BARE_ADDRESS = re.compile(rf"({_LOCAL})@({_DOMAIN})|{_ANGLED}")
_NAMED_ADDRESS = re.compile(rf'(?:"([^"\\\r\n]*)"|([^"<>@,;:\\()\[\]\r\n]*?))[ \t]*{_ANGLED}')
_OPENS = {'"': '"', "(": ")", "[": "]"}
_NO_MAILBOX: tuple[None, None, None] = (None, None, None)


def _plain(text: str) -> bool:
    """No control character and no whitespace but space and tab."""
    return text.replace("\t", " ").isprintable()


def _never_a_mailbox(text: str) -> bool:
    """Whether flanker's single-mailbox grammar certainly refuses `text`: outside quotes, comments and
    domain literals it holds no `@` or more than one, or a `,` or `;` (tokens no rule of that grammar
    takes). The lexer's states are followed exactly, as long as its lexing succeeds at all (if it does
    not, the parse fails anyway), except inside its URL token, which is why a `://` answers False."""
    if "://" in text:
        return False
    closing = ""
    escaped = False
    ats = 0
    for char in text:
        if closing:
            if escaped:
                escaped = False
            elif char == "\\" and closing == '"':
                escaped = True
            elif char == closing:
                closing = ""
        elif char == "@":
            ats += 1
        elif char in ",;":
            return True
        else:
            closing = _OPENS.get(char, "")
    return ats != 1


def _bare(word: str) -> tuple[str, str, None] | None:
    match = _BARE_ADDRESS.fullmatch(word)
    if not match:
        return None
    local, domain = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
    if not _plain(local):
        return None
    domain = domain.lower()
    return f"{local}@{domain}", domain, None


def _simple_address(value: str) -> tuple[str | None, str | None, str | None] | None:
    """flanker's `parse()` answer for the shapes it gives a certain answer to, without importing it;
    None for anything else, which flanker reads. tests/test_fast_paths.py holds the two to the same
    answers.

    flanker first parses the stripped value: the common shapes (`a@b.example`, `<a@b.example>`,
    `Name <a@b.example>`, `"Name" <a@b.example>`) are read as its grammar reads them. When the whole
    value certainly fails, it parses the last space-separated word alone and takes the text before it,
    verbatim, as the display name (`Doe, John <j@x.example>`, `j@x.example <j@x.example>`), or finds no
    mailbox (a Received line pasted into From, a VERP address with two `@`).
    """
    if len(value) > 254 or "xn--" in value.lower():
        return None  # flanker checks lengths and punycode; leave those to it
    stripped = value.strip()
    bare = _bare(stripped)
    if bare is not None:
        return bare
    match = _NAMED_ADDRESS.fullmatch(stripped)
    if match:
        quoted, phrase, local, domain = match.groups()
        if not _plain(local) or not _plain(quoted if quoted is not None else phrase):
            return None
        # flanker keeps a quoted name as written and collapses the whitespace of an unquoted one
        name = quoted if quoted is not None else " ".join(phrase.split())
        domain = domain.lower()
        return f"{local}@{domain}", domain, name or None
    if not _never_a_mailbox(stripped):
        return None
    head, space, last = value.rpartition(" ")
    if not space:
        return _NO_MAILBOX
    bare = _bare(last)
    if bare is not None:
        return bare[0], bare[1], head or None
    return _NO_MAILBOX if _never_a_mailbox(last) else None


@lru_cache(maxsize=4096)
def _parse_mailbox(value: str) -> tuple[str | None, str | None, str | None]:
    simple = _simple_address(value)
    if simple is not None:
        return simple
    if "@" not in value:
        return None, None, None  # no mailbox to find (flanker would at most see a URL)
    try:
        parsed = _flanker().parse(value)
    except Exception:  # flanker raises a wide range of internal errors on hostile input
        parsed = None
    mailbox = getattr(parsed, "mailbox", None)  # a URL "address" has a host but no mailbox
    if not mailbox or not getattr(parsed, "hostname", None):
        return None, None, None
    host = str(parsed.hostname).lower().rstrip(".")
    name = parsed.display_name or None
    return f"{mailbox}@{host}", host, name


_ADDR_FALLBACK = re.compile(r"<?([^\s<>\"'@,;]+)@([A-Za-z0-9._-]+\.[A-Za-z0-9-]+|[A-Za-z0-9-]+)>?")


def _first_of_list(value: str) -> str | None:
    """The text before the first comma outside quotes, angle brackets and comments; None for no such
    comma (one mailbox, or a comma that is part of a name)."""
    for index in _list_commas(value):
        return value[:index].strip()
    return None


def split_address_list(value: str, limit: int) -> list[str]:
    """An address list's members (at most `limit`), split at the commas between them: not at one in a
    quoted name, a comment or an address in angle brackets."""
    members: list[str] = []
    start = 0
    for index in _list_commas(value):
        members.append(value[start:index])
        start = index + 1
        if len(members) >= limit:
            return members
    members.append(value[start:])
    return members


def _list_commas(value: str) -> Iterator[int]:
    quoted = escaped = False
    angle = comment = 0
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif comment:  # a comment holds no quoted string (RFC 5322 ctext), but comments nest
            comment += (char == "(") - (char == ")")
        elif char == '"':
            quoted = True
        elif char == "(":
            comment = 1
        elif char == "<":
            angle += 1
        elif char == ">" and angle:
            angle -= 1
        elif char == "," and not angle:
            yield index


def parse_address(value: str | None, defects: Defects | None = None) -> ParsedAddress | None:
    """One mailbox (the first of a list) with a lower-case domain, or None.

    flanker does the RFC 5322 parsing; a regex fallback keeps obviously present addresses that flanker
    refuses (junk mail is rarely standards-conforming).
    """
    if not value:
        return None
    decoded = decode_words(value, defects) or ""
    if len(decoded) > 2000:
        decoded = decoded[:2000]
    addr = None
    first = _first_of_list(decoded) if "," in decoded else None
    if first:
        # A list (`a <a@x>, b <b@y>`): its first mailbox. flanker reads a whole list as one odd
        # mailbox (the last address, the rest as its display name).
        addr, domain, name = _parse_mailbox(first)
    if addr is None:
        addr, domain, name = _parse_mailbox(decoded)
    if addr is None and "," in decoded:
        addr, domain, name = _parse_mailbox(decoded.split(",", 1)[0])
    if addr is None:
        match = _ADDR_FALLBACK.search(decoded)
        if not match:
            return None
        domain = match.group(2).lower().rstrip(".")
        addr = f"{match.group(1)}@{domain}"
        name = decoded[: match.start()].strip(' "\t') or None
        if defects is not None:
            defects.add("address not RFC 5322-conforming: extracted leniently")
    if name is not None:
        name = name.replace("\r", " ").replace("\n", " ").strip() or None
    return ParsedAddress(addr, domain, name)


def domain_of(addr: str | None) -> str | None:
    if not addr or "@" not in addr:
        return None
    return addr.rsplit("@", 1)[1].strip(" >").lower().rstrip(".") or None
