"""Outlook .msg reading: the fast sector-run reader must return exactly what olefile reads."""

from __future__ import annotations

from io import BytesIO

import olefile
import pytest

from parsers.headers import Defects
from parsers.limits import DEFAULT_LIMITS
from parsers.msg import MsgError, _fat_stream, msg_to_message
from tests.conftest import SAMPLES

MSG_FILES = sorted(SAMPLES.glob("*.msg"))


@pytest.mark.parametrize("path", MSG_FILES, ids=lambda p: p.name)
def test_fat_stream_equals_olefile(path: object) -> None:
    data = path.read_bytes()  # type: ignore[attr-defined]
    ole = olefile.OleFileIO(BytesIO(data))
    checked = 0
    for entry in ole.listdir():
        size = ole.get_size(entry)
        if size >= ole.minisectorcutoff:
            assert _fat_stream(ole, entry, size) == ole.openstream(entry).read()
            checked += 1
    assert checked > 0


def test_embedded_msg_becomes_an_attached_message() -> None:
    msg = msg_to_message(
        (SAMPLES / "eml-analyzer_outer_with_embedded.msg").read_bytes(), DEFAULT_LIMITS, Defects()
    )
    kinds = [part.get_content_type() for part in msg.walk()]
    assert "message/rfc822" in kinds
    assert msg["Subject"] == "outer subject"


def test_truncated_msg_is_a_clean_error() -> None:
    data = (SAMPLES / "mailparser_outlook_newsletter.msg").read_bytes()
    with pytest.raises(MsgError):
        msg_to_message(data[:3000], DEFAULT_LIMITS, Defects())
