"""How often the cycle collector runs in abusepipe's processes.

CPython collects its youngest generation every 700 net allocations and the whole heap every 100 of
those. Parsing one report allocates tens of thousands of short-lived objects (headers, addresses,
pydantic models), almost none of them in cycles, and the process holds ~10^5 long-lived ones (SQLAlchemy,
pydantic, the parsers' tables) that every full collection walks again. Measured on the benchmark mbox
(12,610 messages, `ingest --workers 0`): 1.2 s of 13-14 CPU-s went to collections; with the thresholds
below, 0.5 s. Cycles still get collected, only in larger batches: the memory they hold meanwhile is a few
MB at most.
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 10, 10)
"""Young generation every 10,000 net allocations (CPython's default is 700); the older ones as often as
CPython's defaults make them, relative to it."""


def collect_less_often() -> None:
    """Apply `THRESHOLDS` to this process (forked children inherit them; spawned ones call it again)."""
    gc.set_threshold(*THRESHOLDS)
