"""Window rankings (the top offenders of the last 24 h, 7 d...) kept until the store changes.

A ranking over a window sums every offender's hourly buckets in it: tens of milliseconds on a store of a
million reports, and the overview asks for one per kind. It changes only when a report is stored, and
every stored report adds to `report_hours` in the same transaction, so the sum of that small table is
the ranking's version: a cached ranking is served while it holds, recomputed as soon as it moves.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

from sqlalchemy import Connection, func, select

from sinks import models as m
from sinks.queries import OffenderRow, Sort, top_offenders
from sinks.stored import epoch_hour

MAX_ENTRIES = 256


def store_version(connection: Connection) -> tuple[int, int]:
    h = m.report_hours
    reports, hours = connection.execute(select(func.coalesce(func.sum(h.c.reports), 0), func.count())).one()
    return int(reports), int(hours)


class RankingCache:
    def __init__(self, size: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[tuple[str, int, int, str], tuple[tuple[int, int], list[OffenderRow]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self._size = size

    def top(
        self,
        connection: Connection,
        kind: str,
        *,
        now: datetime,
        since: datetime | None,
        top: int,
        sort: Sort = "reports",
        version: tuple[int, int] | None = None,
    ) -> list[OffenderRow]:
        """`top_offenders`, from the cache when the store has not changed since it was computed. The
        all-time ranking reads an index of its own and is never cached."""
        if since is None:
            return top_offenders(connection, kind, now=now, since=None, top=top, sort=sort)
        current = version if version is not None else store_version(connection)
        key = (kind, epoch_hour(since), top, sort)
        with self._lock:
            held = self._entries.get(key)
            if held is not None and held[0] == current:
                self._entries.move_to_end(key)
                return held[1]
        rows = top_offenders(connection, kind, now=now, since=since, top=top, sort=sort)
        with self._lock:
            self._entries[key] = (current, rows)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return rows
