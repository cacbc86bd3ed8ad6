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
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from blocklist.listings import Change, Settled, ended_since, evaluate_touched, expire_due
from blocklist.policy import ListingPolicy
from sinks.stored import BatchResult

log = logging.getLogger("abusepipe.blocklist")
MAX_SETTLED = 200_000
CLOCK_SLACK = timedelta(seconds=30)
"""Delistings are re-read this far back: writers' clocks and commit order differ a little."""
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
        self._checked = clock()
        self._settled: Settled = {}
        """What needs no look for a while (see `evaluate_keys`); another writer's delisting in that
        time is noticed late by at most EXTEND_EVERY."""

    def __call__(self, result: BatchResult) -> None:
        now = self.clock()
        with self._lock:
            sweep = time.monotonic() >= self._next_sweep
            if sweep:
                self._next_sweep = time.monotonic() + SWEEP_EVERY
        with self._lock:
            if len(self._settled) > MAX_SETTLED:
                self._settled = {k: v for k, v in self._settled.items() if v > now}
            settled = dict(self._settled)
            checked, self._checked = self._checked, now
        with self.engine.begin() as connection:
            if settled:  # delisted elsewhere (the portal, an analyst): evidence may relist it at once
                for key in ended_since(connection, checked - CLOCK_SLACK):
                    settled.pop(key, None)
                    with self._lock:
                        self._settled.pop(key, None)
            changes = evaluate_touched(connection, self.policy, result.touched, now, settled=settled)
            if sweep:
                changes += expire_due(connection, now)
        with self._lock:
            self._settled.update(settled)
        for change in changes:
            log.info("%s", change.line())
            if self.on_change is not None:
                self.on_change(change)
