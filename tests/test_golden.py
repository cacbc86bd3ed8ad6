"""Golden tests: copied real samples -> the expected contract fields and key analyst context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parsers import parse_message
from tests.conftest import SAMPLES
from tests.golden_fields import pick

GOLDEN = sorted((SAMPLES.parent / "golden").glob("*.json"))


@pytest.mark.parametrize("golden", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden(golden: Path) -> None:
    expected = json.loads(golden.read_text())
    raw = (SAMPLES / expected["sample"]).read_bytes()
    reports = parse_message(raw, trap=expected["trap"])
    assert [pick(r) for r in reports] == expected["reports"]


def test_golden_files_cover_every_sample() -> None:
    samples = {p.name for p in SAMPLES.iterdir() if p.suffix in (".eml", ".msg")}
    assert samples == {json.loads(g.read_text())["sample"] for g in GOLDEN}
    assert len(GOLDEN) >= 19


def test_report_ids_are_deterministic_and_distinct() -> None:
    raw = (SAMPLES / "flanker_forward_message-rfc822_attachment.eml").read_bytes()
    first, second = parse_message(raw), parse_message(raw)
    assert [r.report_id for r in first] == [r.report_id for r in second]
    other = parse_message((SAMPLES / "flanker_fbl_aol.eml").read_bytes())
    assert first[0].report_id != other[0].report_id
