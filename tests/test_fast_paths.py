"""The hand-written fast paths give the answers of what they stand in for, on generated and real input:

- `parsers.headers._simple_address` (common address shapes) = flanker's address parser;
- `parsers.suffixes.registrable_domain_of` (tldextract's bundled list, read directly) = tldextract;
- `parsers.fastmime._split_headers` (well-formed header blocks by regular expression) = the line rules;
- `parsers.fastmime.header_params` and `content_type_of` = `Message.get_params` and `get_content_type`;
- `parsers.mime.payload_of` and `transfer_encoding` = `Message.get_payload()` and `Message.get`;
- `parsers.trust.NetworkSet` (integer masks) = `address in network` of `ipaddress`;
- `parsers.headers.unfold` (string methods) = the folding regex `_FOLD`;
- `parsers.received._mask_comments` (stops once no comment is left) = masking until nothing changes;
- `parsers.received._clauses` (ASCII lines searched lower-cased) = the case-insensitive search.
"""

from __future__ import annotations

import contextlib
import email
import email.errors
import ipaddress
import re
from collections.abc import Callable
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abusepipe.errors import AbusepipeError
from parsers import fastmime, headers
from parsers.api import parse_message
from parsers.headers import _FOLD, _flanker, _simple_address, unfold
from parsers.mime import payload_of, transfer_encoding
from parsers.received import _CLAUSE, _INNERMOST_COMMENT, _blank, _clauses, _mask_comments
from parsers.suffixes import registrable_domain_of
from parsers.trust import NetworkSet, microsoft_internal, microsoft_outbound
from tests.conftest import CORPUS, SAMPLES, one
from tests.mail import JUNK_HEADERS, junk

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
# Characters flanker's lexer treats apart: non-ASCII atom characters (whitespace among them), controls,
# and the specials that open quotes, comments and domain literals or end a mailbox.
ODD = "é\ufffd\U0001f600\xa0\x85\u3000\u2028\x01\x7f\x0b\r\n"
atoms = st.text(ATEXT, min_size=1, max_size=12) | st.text(
    ATEXT + "é\ufffd\U0001f600\xa0\u3000", min_size=1, max_size=6
)
local_parts = st.lists(atoms, min_size=1, max_size=3).map(".".join)
labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
domains = st.lists(
    labels | st.sampled_from(["a_b", "=x", "-", "x+y", "é", "Ab."]), min_size=1, max_size=4
).map(".".join)
names = st.one_of(
    st.text("abc XYZ.-'éü\t", max_size=20),
    st.text("abc XYZ,@<>()\\é", max_size=20).map(lambda t: f'"{t}"'),
    st.text('ab @.;:,<>()[]"\\\t' + ODD, max_size=20),
)
SHAPES = [
    "{a}", "<{a}>", "{n} <{a}>", "{n}<{a}>", " {a} ", "{w}{a}{w}", "{w}{n} <{a}>{w}", "{n}@{m} <{a}>",
    "{w}{n}@{m} <{a}>", "{n}@{m}<{a}>", "{n}@{m} <{a}> ", "{n} <{a}>; {m}", "{n}; {m}", "{n} for <{a}>; {m}",
    "{n} ({m}) [{m}] <{a}>;{m}", '{n} "{m};" {a}', "{n} ({m};) {a}", "{n} [{m};] {a}", "http://{m};{a}",
    "{n};{m} <{a}>", "{a} (;)", "<{a}> (;{m})", '"{m};" <{a}> (c)', '"a;b" <{a}> {w}', '"a\\";b" <{a}> (c)',
    "x@[a;b] ({n})", "{n}, {m} <{a}>", "{n},{m} {a}", "{a}@{m}", "<{a}@{m}>", "{n} {a}@{m}", "{a},{m}",
    "{n} <{a}> {m}", "{n}, <{a}>", "{a}.", "{n} ({m}) {a} ({m})", "{n} ,_<{a}>", "{n} < {a} >", "<{a}\t>",
    "{n}@{m} <{a} >{w}", "{n} {w}< {a}{w}>",
]  # fmt: skip


def flanker_answer(value: str) -> tuple[str | None, str | None, str | None]:
    """flanker's answer as `_parse_mailbox` reads it."""
    try:
        parsed = _flanker().parse(value)
    except Exception:  # as in _parse_mailbox: flanker's internal errors mean no mailbox
        return None, None, None
    if not getattr(parsed, "mailbox", None) or not getattr(parsed, "hostname", None):
        return None, None, None
    host = str(parsed.hostname).lower().rstrip(".")
    return f"{parsed.mailbox}@{host}", host, parsed.display_name or None


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.tuples(local_parts, domains, names, names, st.text(" \t\r\n\xa0\u2028", max_size=3)),
    st.sampled_from(SHAPES),
)
def test_simple_addresses_read_as_flanker_reads_them(
    parts: tuple[str, str, str, str, str], shape: str
) -> None:
    local, domain, name, more, space = parts
    value = shape.format(a=f"{local}@{domain}", n=name, m=more, w=space)
    simple = _simple_address(value)
    if simple is not None:
        assert simple == flanker_answer(value), value


def test_local_part_characters_are_flankers_atom_characters() -> None:
    _flanker()
    from flanker.addresslib._parser import lexer

    theirs = re.compile(lexer.t_ATOM, re.VERBOSE)
    ours = re.compile(headers._UTEXT + "+")
    differ = [
        hex(i) for i in range(0x110000) if bool(theirs.fullmatch(chr(i))) != bool(ours.fullmatch(chr(i)))
    ]
    assert differ == []


def test_the_shapes_that_matter_take_the_fast_path() -> None:
    for value in (
        "a@b.example",
        "<a@b.example>",
        "Ann Example <a@b.example>",
        '"Example, Ann" <a@b.example>',
        "\n <a@b.example>",  # an encoded-word that decoded to a line break
        "\ufffd\ufffd@b.example",  # an 8-bit local part read with replacement characters
        "a@b.example <a@b.example>",  # the address again as the display name
        "from x.example (x.example [192.0.2.1]) by y.example for <a@b.example>; Tue",  # a Received line
        "Doe, John <a@b.example>",  # a list-like name, unquoted
        "bounce+x=y.example@b.example",  # VERP: two @, no mailbox
        "a@localhost",
        "John <a@b.example >",
        "a@b.example, c@d.example",  # a list read whole (parse_address asks for its first member first)
    ):
        simple = _simple_address(value)
        assert simple is not None, value
        assert simple == flanker_answer(value), value
    for value in ("<a@b.example", "x <a@xn--bcher-kva.example>", "a@b.example.", '"x" y <a@b.example>'):
        assert _simple_address(value) is None, value


def test_real_addresses_read_as_flanker_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value the parser asks for a mailbox in the real mail: where the fast path answers, flanker
    answers the same."""
    values: list[str] = []

    def recording(value: str) -> tuple[str | None, str | None, str | None] | None:
        values.append(value)
        return _simple_address(value)

    monkeypatch.setattr(headers, "_simple_address", recording)
    headers._parse_mailbox.cache_clear()
    try:
        for path in real_mail():
            for trap in (False, True):
                with contextlib.suppress(AbusepipeError):  # a rejection has asked for its addresses too
                    parse_message(path.read_bytes(), trap=trap)
    finally:
        headers._parse_mailbox.cache_clear()
    answered = [value for value in set(values) if _simple_address(value) is not None]
    assert len(answered) > 40  # the samples alone hold 62
    for value in answered:
        assert _simple_address(value) == flanker_answer(value), value


HOSTS = [
    "www.bbc.co.uk", "bbc.co.uk", "co.uk", "uk", "a.b.c.kawasaki.jp", "city.kawasaki.jp", "www.ck", "x.y.ck",
    "blogspot.com", "foo.blogspot.com", "xn--80ak6aa92e.com", "www.xn--55qx5d.cn", "例子.公司.cn", "a.b",
    "localhost", "a..b.com", "a.b.com.", "1.2.3.4", "mail.example.com", "s3.amazonaws.com", "x.github.io",
    "a.b.c.d.e.f.gov.uk", "ｅｘａｍｐｌｅ。com", "",
]  # fmt: skip


def test_registrable_domains_as_tldextract_gives_them() -> None:
    import tldextract

    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    for host in HOSTS:
        parts = extract(host)
        expected = f"{parts.domain}.{parts.suffix}" if parts.domain and parts.suffix else None
        assert registrable_domain_of(host) == expected, host


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(labels, st.sampled_from(["co", "uk", "jp", "ck", "com", "xn--p1ai", "*", "www"])),
        max_size=5,
    )
)
def test_generated_hosts_as_tldextract_gives_them(parts: list[str]) -> None:
    import tldextract

    host = ".".join(parts).lower()
    extracted = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)(host)
    expected = f"{extracted.domain}.{extracted.suffix}" if extracted.domain and extracted.suffix else None
    assert registrable_domain_of(host) == expected


def same_split(text: str) -> None:
    fast, fast_body = fastmime._split_headers(text)
    slow, slow_body = fastmime._split_header_lines(text)
    assert fast._headers == slow._headers  # type: ignore[attr-defined]
    assert fast_body == slow_body
    assert [type(d) for d in fast.defects] == [type(d) for d in slow.defects]
    assert fast.get_unixfrom() == slow.get_unixfrom()


header_lines = st.one_of(
    st.from_regex(r"[A-Za-z-]{1,12}:[ \t]?[ -~]{0,30}", fullmatch=True),
    st.from_regex(r"[ \t][ -~]{0,20}", fullmatch=True),
    st.sampled_from(["", "From x@y Mon", "not a header", ":x", " ", "X:\x0cy", "Y: \x85z", "Z:a\rb"]),
)


@settings(max_examples=500)
@given(
    st.lists(header_lines, max_size=8),
    st.sampled_from(["\r\n", "\n", "\r"]),
    st.text("ab\r\n :", max_size=10),
)
def test_header_blocks_split_as_the_line_rules_split_them(lines: list[str], eol: str, tail: str) -> None:
    same_split(eol.join(lines) + eol + tail)
    same_split(eol.join(lines))


def test_real_header_blocks_split_as_the_line_rules_split_them() -> None:
    files = sorted(SAMPLES.glob("*.eml"))
    if CORPUS.is_dir():
        files += sorted(CORPUS.rglob("*.eml"))
    for path in files:
        same_split(path.read_bytes().decode("ascii", "surrogateescape"))


def test_the_line_rules_still_record_their_defects() -> None:
    msg, body = fastmime._split_headers("Subject: x\r\nno colon here\r\n\r\nbody")
    assert [type(d) for d in msg.defects] == [email.errors.MissingHeaderBodySeparatorDefect]
    assert body.startswith("no colon here")


def stdlib_params(msg: Message, header: str) -> object:
    try:
        found = msg.get_params(header=header)
    except Exception:
        return None
    return None if found is None else [(key.lower(), value) for key, value in found]


def stdlib_content_type(msg: Message) -> str:
    try:
        return msg.get_content_type()
    except Exception:
        return "error"


def same_params(msg: Message) -> None:
    for header in ("content-type", "content-disposition"):
        assert fastmime._params(msg, header) == stdlib_params(msg, header), msg.get_all(header)
    try:
        fast = fastmime.content_type_of(msg)
    except Exception:
        fast = "error"
    assert fast == stdlib_content_type(msg), msg.get_all("content-type")


param_text = st.text('ab =;"\\*<>\t\r\n/é', max_size=12)
param_values = st.one_of(
    st.lists(st.tuples(param_text, param_text, st.booleans()), max_size=4).map(
        lambda items: "; ".join(f'{k}="{v}"' if quoted else f"{k}={v}" for k, v, quoted in items)
    ),
    st.text('ab =;"\\*<>\t/', max_size=30),
)


def real_mail() -> list[Path]:
    """The .eml samples, plus the report and bulk corpora where they are present."""
    files = sorted(SAMPLES.glob("*.eml"))
    for folder in (CORPUS, CORPUS.parent / "corpus-bulk"):
        if folder.is_dir():
            files += sorted(folder.rglob("*.eml"))
    return files


def check_real_parts(parse: Callable[[bytes], Message], check: Callable[[Message], int]) -> None:
    """`check` on every part of every real mail as `parse` reads it; `check` says how many values it
    checked there, and together they must outnumber the files (or the walk found next to nothing)."""
    files = real_mail()
    checked = 0
    for path in files:
        for part in parse(path.read_bytes()).walk():
            checked += check(part)
    assert checked > len(files)


@settings(max_examples=1000)
@given(st.sampled_from(["text/plain", "multipart/mixed", "Text/HTML ", "", "x", "a/b/c"]), param_values)
def test_parameters_read_as_the_stdlib_reads_them(main: str, params: str) -> None:
    msg = Message()
    msg["Content-Type"] = f"{main}; {params}" if params else main
    msg["Content-Disposition"] = f"attachment; {params}"
    same_params(msg)


def test_real_parameters_read_as_the_stdlib_reads_them() -> None:
    def check(part: Message) -> int:
        same_params(part)
        return 1

    check_real_parts(email.message_from_bytes, check)


def test_no_content_type_is_the_default_type() -> None:
    msg = Message()
    assert fastmime.content_type_of(msg) == "text/plain"
    assert fastmime._params(msg, "content-type") is None


@pytest.mark.parametrize("value", ["http://example.com/", "http://a@b.example/", "ftp://x"])
def test_a_from_header_that_is_a_url_is_read_not_rejected(value: str) -> None:
    # flanker reads a URL as an "address" with a host and no mailbox: that once failed the whole message.
    report = one(junk(headers=[(n, value if n == "From" else v) for n, v in JUNK_HEADERS]), trap=True)
    assert report.original.from_domain in (None, "b.example")
    assert not any("parser error" in d for d in report.defects)


@settings(max_examples=1000)
@given(st.text("a \t\r\n\x0b\x85\u2028é", max_size=24))
def test_unfolding_as_the_folding_regex_unfolds(value: str) -> None:
    assert unfold(value) == _FOLD.sub(" ", value).strip()


def masked_until_unchanged(line: str) -> str:
    """What `_mask_comments` did before it learnt to stop early."""
    if "(" not in line:
        return line
    for _ in range(20):
        masked = _INNERMOST_COMMENT.sub(_blank, line)
        if masked == line:
            break
        line = masked
    opening = line.find("(")
    return line[:opening] + " " * (len(line) - opening) if opening >= 0 else line


@settings(max_examples=1000)
@given(st.text("a ()[]", max_size=30))
def test_comments_masked_as_masking_until_unchanged_masks_them(line: str) -> None:
    assert _mask_comments(line) == masked_until_unchanged(line)


def same_payload(part: Message) -> None:
    assert payload_of(part) == part.get_payload()
    assert transfer_encoding(part) == str(part.get("content-transfer-encoding", "")).strip().lower()


@settings(max_examples=300)
@given(
    st.sampled_from(["", "Content-Transfer-Encoding: 8bit\n", "content-transfer-encoding:  Base64 \n"]),
    st.sampled_from(["", "Content-Type: text/plain; charset=iso-8859-1\n", "Content-Type: text/plain\n"]),
    st.binary(max_size=20),
)
def test_payloads_read_as_the_stdlib_reads_them(cte: str, ctype: str, body: bytes) -> None:
    for part in fastmime.parse_bytes((cte + ctype + "\n").encode() + body).walk():
        same_payload(part)


def test_real_payloads_read_as_the_stdlib_reads_them() -> None:
    def check(part: Message) -> int:
        same_payload(part)
        return 1

    check_real_parts(fastmime.parse_bytes, check)


def near(network: ipaddress.IPv4Network | ipaddress.IPv6Network, offset: int) -> int:
    """An address at `offset` from the network's first one: inside, at its edges or just outside."""
    return (int(network.network_address) + offset) % (2**network.max_prefixlen)


@settings(max_examples=500)
@given(st.integers(-2, 2**12), st.booleans(), st.integers(0, 2**128 - 1))
def test_network_sets_hold_what_ipaddress_networks_hold(offset: int, edge: bool, anywhere: int) -> None:
    tables = [microsoft_outbound(), microsoft_internal()]
    mixed = NetworkSet([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")])
    for table in [*tables, mixed]:
        for network in table:
            value = near(network, offset if not edge else network.num_addresses - 1 + offset % 2)
            for ip in (
                ipaddress.ip_address(value if network.version == 6 else value % 2**32),
                ipaddress.IPv6Address(anywhere),
                ipaddress.IPv4Address(anywhere % 2**32),
            ):
                assert (ip in table) == any(ip.version == n.version and ip in n for n in table)


def clauses_case_insensitively(line: str) -> dict[str, str]:
    """What `_clauses` did before it searched ASCII lines lower-cased."""
    masked = _mask_comments(line)
    out: dict[str, str] = {}
    matches = list(_CLAUSE.finditer(masked))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(line)
        out.setdefault(match.group(1).lower(), line[match.end() : end].strip())
    return out


received_words = st.sampled_from(
    ["from", "BY", "Via", "with", "id", "FOR", "x", "(by)", "(", ")", "vİa", "ſ"]
)


@settings(max_examples=1000)
@given(st.lists(st.tuples(received_words, st.sampled_from([" ", "\t", "", "  "])), max_size=12))
def test_received_clauses_found_as_the_case_insensitive_search_finds_them(
    words: list[tuple[str, str]],
) -> None:
    line = " " + "".join(word + blank for word, blank in words)
    assert _clauses(line) == clauses_case_insensitively(line)


def test_real_received_clauses_found_as_the_case_insensitive_search_finds_them() -> None:
    def check(part: Message) -> int:
        lines = [" " + str(value).split(";", 1)[0] for value in part.get_all("received") or ()]
        for line in lines:
            assert _clauses(line) == clauses_case_insensitively(line)
        return len(lines)

    check_real_parts(fastmime.parse_bytes, check)
