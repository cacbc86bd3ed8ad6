"""Property test: mutated real mails never make the parser raise anything but a clean rejection."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abusepipe.errors import ReportRejected
from parsers import ParseLimits, parse_message
from tests.conftest import CORPUS, SAMPLES
from tests.mail import JUNK_HEADERS, arf, iodef_document, iodef_mail, junk, message

SEEDS = sorted(
    p for p in [*SAMPLES.glob("*.eml"), *SAMPLES.glob("*.msg"), *(SAMPLES / "malformed").glob("*")]
)
if CORPUS.is_dir():
    SEEDS += sorted(p for p in CORPUS.rglob("*") if p.suffix in (".eml", ".msg"))
RAW = [p.read_bytes() for p in SEEDS if p.is_file()]
# The newer paths, built from the formats' descriptions: IODEF with an ARF inside, an inline forward
# with the original header block, a whole message forwarded as the message.
RAW += [
    iodef_mail(iodef_document(record=arf("abuse", junk()).decode())),
    message(
        [("From", "r@reporter.example"), ("Subject", "Fwd"), ("Content-Type", "text/plain; format=flowed")],
        "-------- Forwarded Message --------\n"
        + "".join(f"{name}: \t{value}\n" for name, value in JUNK_HEADERS)
        + "\nbody http://x.example.com/\n",
    ),
    b"From: r@reporter.example\r\nContent-Type: message/rfc822\r\n\r\n" + junk(),
]
LIMITS = ParseLimits(max_message_bytes=4 * 1024 * 1024, max_parts=100, max_depth=6)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(RAW)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "boundary", "dup_header", "insert", "delete_line"]))
        if not raw:
            break
        pos = draw(st.integers(0, len(raw) - 1))
        if op == "truncate":
            del raw[pos:]
        elif op == "flip":
            raw[pos] = draw(st.integers(0, 255))
        elif op == "boundary":
            marker = raw.find(b"--", pos)
            if marker >= 0:
                raw[marker : marker + 2] = draw(st.sampled_from([b"", b"-", b"--\r\n--", b"\x00"]))
        elif op == "dup_header":
            end = raw.find(b"\n", pos)
            start = raw.rfind(b"\n", 0, pos) + 1
            if end > start:
                raw[start:start] = raw[start : end + 1] * draw(st.integers(1, 50))
        elif op == "insert":
            raw[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\r\nContent-Type: multipart/mixed; boundary=x\r\n",
                        b"=?utf-8?b?////?=",
                        b"\r\n\r\n",
                        b"Received: from [IPv6:::1%25] (x [999.1.1.1]) by\r\n",
                        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
                        b"Content-Transfer-Encoding: base64\r\n",
                        b"(((((((((((((((",
                        b"\r\n--x--\r\n",
                    ]
                )
            )
        elif op == "delete_line":
            end = raw.find(b"\n", pos)
            del raw[pos : end if end > 0 else pos + 1]
    return bytes(raw)


@settings(
    max_examples=int(os.environ.get("ABUSEPIPE_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=mutated(), trap=st.booleans())
def test_mutated_mail_never_crashes(raw: bytes, trap: bool) -> None:
    try:
        reports = parse_message(raw, trap=trap, limits=LIMITS)
    except ReportRejected as exc:
        assert exc.reason
        assert not exc.reason.startswith("parser error"), exc.reason
        return
    for report in reports:
        report.model_dump_json()  # every report serialises


def test_deep_nesting_is_bounded() -> None:
    inner = b"From: a@b.example\r\nSubject: x\r\n\r\nbody\r\n"
    for level in range(200):
        inner = (
            b"From: f%d@r.example\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n"
            b"Content-Type: message/rfc822\r\n\r\n"
            % (level, level, level)
            + inner
            + b"\r\n--b%d--\r\n" % level
        )
    try:
        reports = parse_message(inner)
    except ReportRejected as exc:
        assert not exc.reason.startswith("parser error"), exc.reason
    else:
        assert len(reports) == 1
        assert any("nested deeper" in d for d in reports[0].defects)


def test_many_parts_are_bounded() -> None:
    parts = b"".join(
        b"--x\r\nContent-Type: message/rfc822\r\n\r\nFrom: a@b.c\r\nSubject: %d\r\n\r\nhi\r\n" % i
        for i in range(2000)
    )
    raw = b"From: r@r.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n" + parts + b"--x--\r\n"
    reports = parse_message(raw)
    assert len(reports) == ParseLimits().max_reports
    assert any(
        "attached messages: the rest were skipped" in d or "MIME parts" in d for d in reports[0].defects
    )


def test_seed_set_is_not_empty() -> None:
    assert len(RAW) >= 40
    assert Path(SEEDS[0]).exists()
