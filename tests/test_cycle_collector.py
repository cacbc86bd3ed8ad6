"""The cycle collector's thresholds (`abusepipe.cycle_collector`) hold in every process that parses: a command's
own, and its parser workers however they were started."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

from abusepipe.cycle_collector import THRESHOLDS
from ingest.workers import parser_pool
from tests.conftest import ROOT, SAMPLES


def test_a_command_collects_less_often() -> None:
    probe = (
        "import gc, json, sys\n"
        "from abusepipe.cli.app import run\n"
        "before = gc.get_threshold()\n"
        "code = run(['parse', sys.argv[1]])\n"
        "print(json.dumps([code, before, gc.get_threshold()]), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(SAMPLES / "flanker_fbl_aol.eml")],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    code, before, after = json.loads(done.stderr.decode().splitlines()[-1])
    assert code == 0, done.stderr.decode()
    assert tuple(before) != THRESHOLDS  # CPython's own, until the command runs
    assert tuple(after) == THRESHOLDS


def test_parser_workers_collect_less_often() -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's: a forked worker must not merely inherit the thresholds
    try:
        with parser_pool(2) as pool:
            assert {pool.submit(gc.get_threshold).result(timeout=60) for _ in range(4)} == {THRESHOLDS}
    finally:
        gc.set_threshold(*before)
