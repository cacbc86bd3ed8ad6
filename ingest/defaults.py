"""Defaults of the intake commands, cheap to import: the CLI's argument parser shows them in --help."""

from __future__ import annotations

import os

DEFAULT_BATCH = 500
"""Messages per transaction (or broker round trip) of `ingest`."""


def default_workers() -> int:
    """Parser processes: one per core. The writer mostly waits on the database, so a core of its own
    would idle (measured on 2 cores: 2 workers 1,850 reports/s, 1 worker 1,350)."""
    return os.cpu_count() or 1
