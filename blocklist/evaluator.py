"""The listing policy on the write path: after each committed batch, the offenders it counted new junk
against are re-evaluated, and now and then the listings whose TTL ran out are written down as expired.

It runs after the batch's commit, in its own transaction: the reports are durable whatever happens here,
and a failure (logged by the store) is made good by the next batch that touches the same offender or by
`abusepipe blocklist evaluate`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine

from blocklist.listings import Change, evaluate_touched, expire_due
from blocklist.policy import ListingPolicy
from sinks.store import BatchResult

log = logging.getLogger("abusepipe.blocklist")
SWEEP_EVERY = 60.0
"""Seconds between sweeps for expired listings (readers never need them: expiry is computed on read)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class ListingEvaluator:
    """The store's `after_commit` hook."""

    def __init__(
        self,
        engine: Engine,
        policy: ListingPolicy,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_change: Callable[[Change], None] | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.clock = clock
        self.on_change = on_change
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def __call__(self, result: BatchResult) -> None:
        now = self.clock()
        with self._lock:
            sweep = time.monotonic() >= self._next_sweep
            if sweep:
                self._next_sweep = time.monotonic() + SWEEP_EVERY
        with self.engine.begin() as connection:
            changes = evaluate_touched(connection, self.policy, result.touched, now)
            if sweep:
                changes += expire_due(connection, now)
        for change in changes:
            log.info("%s", change.line())
            if self.on_change is not None:
                self.on_change(change)
