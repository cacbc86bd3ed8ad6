"""What the store holds against an offender within the policy's window: distinct junk reporters, distinct
spam traps, and the newest evidence.

Counted from the hourly aggregates (`offender_reporter_hours`, `offender_trap_hours`) written with every
batch, so that re-evaluating the offenders a batch touched costs a few indexed queries whatever their
volume. The oldest hour of the window lies only partly inside it: when a decision depends on it, or on
evidence after a delisting, the reports themselves are counted instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, desc, distinct, func, select

from sinks import models as m
from sinks.queries import utc
from sinks.stored import epoch_hour

CHUNK = 500  # keys per IN list: small enough for every database's parameter limit


@dataclass(frozen=True, slots=True)
class Evidence:
    reporters: int
    """Distinct reporters of junk in the window (traps included: a trap is a reporter too)."""
    traps: int
    """Distinct spam traps that caught it in the window."""
    last_seen: datetime | None
    """The newest junk report about it (its `seen_at`), within the window or not."""


NONE = Evidence(0, 0, None)


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), CHUNK):
        yield keys[start : start + CHUNK]


def hourly_counts(
    connection: Connection, kind: str, keys: Iterable[str], since: datetime, *, full_hours: bool
) -> dict[str, tuple[int, int]]:
    """(reporters, traps) per key from the hourly buckets from `since`'s hour on (`full_hours`: from the
    first hour wholly after `since`, a lower bound; else an upper bound)."""
    first = epoch_hour(since) + (1 if full_hours else 0)
    out: dict[str, tuple[int, int]] = {}
    key_list = sorted(set(keys))
    for table, column, slot in (
        (m.offender_reporter_hours, m.offender_reporter_hours.c.reporter, 0),
        (m.offender_trap_hours, m.offender_trap_hours.c.trap, 1),
    ):
        for chunk in _chunks(key_list):
            query = (
                select(table.c.key, func.count(distinct(column)))
                .where(table.c.kind == kind, table.c.key.in_(chunk), table.c.hour >= first)
                .group_by(table.c.key)
            )
            for key, count in connection.execute(query):
                counts = out.get(key, (0, 0))
                out[key] = (count, counts[1]) if slot == 0 else (counts[0], count)
    return out


def exact_counts(connection: Connection, kind: str, key: str, since: datetime) -> tuple[int, int]:
    """(reporters, traps) from the reports seen after `since`: exact, and bounded by one offender."""
    o, r = m.report_offenders, m.reports
    base = (
        select(r.c.reporter, r.c.format)
        .select_from(o.join(r, r.c.report_id == o.c.report_id))
        .where(o.c.kind == kind, o.c.key == key, o.c.seen_at > since, r.c.junk.is_(True))
        .distinct()
    )
    reporters: set[str] = set()
    traps: set[str] = set()
    for reporter, report_format in connection.execute(base):
        reporters.add(reporter)
        if report_format == "trap":
            traps.add(reporter)
    return len(reporters), len(traps)


def last_seen_many(
    connection: Connection, kind: str, keys: Iterable[str], since: datetime
) -> dict[str, datetime]:
    """The newest junk report after `since` about each offender, in one query per chunk of keys."""
    o, r = m.report_offenders, m.reports
    out: dict[str, datetime] = {}
    for chunk in _chunks(sorted(set(keys))):
        query = (
            select(o.c.key, func.max(o.c.seen_at))
            .select_from(o.join(r, r.c.report_id == o.c.report_id))
            .where(o.c.kind == kind, o.c.key.in_(chunk), o.c.seen_at > since, r.c.junk.is_(True))
            .group_by(o.c.key)
        )
        for key, moment in connection.execute(query):
            if moment is not None:
                out[key] = utc(moment)
    return out


_LAST_SEEN = (
    select(m.report_offenders.c.seen_at)
    .select_from(
        m.report_offenders.join(
            m.reports,
            and_(m.reports.c.report_id == m.report_offenders.c.report_id, m.reports.c.junk.is_(True)),
        )
    )
    .where(m.report_offenders.c.kind == bindparam("kind"), m.report_offenders.c.key == bindparam("key"))
    .order_by(desc(m.report_offenders.c.seen_at))
    .limit(1)
)


def last_seen(connection: Connection, kind: str, key: str) -> datetime | None:
    """The newest junk report about the offender (walks its index backwards, stops at the first)."""
    moment = connection.execute(_LAST_SEEN, {"kind": kind, "key": key}).scalar()
    return utc(moment) if moment is not None else None
