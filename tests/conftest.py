from __future__ import annotations

import os
from pathlib import Path

import pytest

from parsers import parse_message
from schemas import AbuseReport

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "samples"
CORPUS = Path(os.environ.get("ABUSEPIPE_CORPUS", ROOT.parent / "shared" / "corpus"))
BULK = CORPUS.parent / "corpus-bulk" / "phishing_pot"


def parse(raw: bytes, **kwargs: object) -> list[AbuseReport]:
    return parse_message(raw, **kwargs)  # type: ignore[arg-type]


def one(raw: bytes, **kwargs: object) -> AbuseReport:
    reports = parse(raw, **kwargs)
    assert len(reports) == 1, [r.format for r in reports]
    return reports[0]


requires_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not present at {CORPUS}")
requires_bulk = pytest.mark.skipif(not BULK.is_dir(), reason=f"bulk corpus not present at {BULK}")
