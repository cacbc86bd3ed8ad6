"""Analyst queries, answered from the aggregates (never by scanning all reports).

Every function takes `now` so that windows are reproducible; the CLI passes the current time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import BindParameter, Connection, bindparam, desc, func, literal_column, select

from abusepipe.errors import ConfigError
from sinks import models as m
from sinks.kinds import KINDS
from sinks.stored import decompress, epoch_hour

Sort = Literal["reports", "reporters"]
_RELATIVE = re.compile(r"^\s*(\d+)\s*([hdw])\s*$", re.IGNORECASE)
RELATED_SAMPLE = 200  # related keys are drawn from the offender's latest reports: a sample, read in ~3 ms


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything is stored in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_since(text: str | None, now: datetime) -> datetime | None:
    """`24h`, `7d`, `2w`, or an ISO date/time (UTC when no zone is given)."""
    if not text:
        return None
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        return (
            now
            - {"h": timedelta(hours=amount), "d": timedelta(days=amount), "w": timedelta(weeks=amount)}[unit]
        )
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(
            f"--since: {text!r} is neither a window (24h, 7d, 2w) nor a date (2026-11-01)"
        ) from exc
    return utc(moment)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConfigError(f"unknown offender kind {kind!r}: choose one of {', '.join(KINDS)}")
    return kind


def typed_key(kind: str, key: str) -> str:
    """A key as the store writes it: lower case, but `AS64500` for an ASN (`64500` and `as64500` too)."""
    key = key.strip()
    if kind == "asn":
        return "AS" + key.upper().removeprefix("AS")
    return key.lower()


@dataclass(frozen=True, slots=True)
class OffenderRow:
    kind: str
    key: str
    reports: int
    """Junk reports in the window (not-spam and opt-out never count)."""
    reporters: int
    """Distinct reporters of junk in the window."""
    all_reports: int
    """Every report in the window, whatever its feedback type."""
    first_seen: str
    last_seen: str


def top_offenders(
    connection: Connection,
    kind: str,
    *,
    now: datetime,
    since: datetime | None = None,
    top: int = 20,
    sort: Sort = "reports",
    country: str | None = None,
) -> list[OffenderRow]:
    check_kind(kind)
    if country is not None:
        return _top_in_country(connection, kind, check_country(country), since=since, top=top, sort=sort)
    if since is None:
        return _top_all_time(connection, kind, top, sort)
    first_hour = epoch_hour(since)
    hours = m.offender_hours
    if sort == "reports":
        ranked = connection.execute(
            select(
                hours.c.key,
                func.sum(hours.c.junk_reports).label("junk"),
                func.sum(hours.c.reports).label("all"),
            )
            .where(hours.c.kind == kind, hours.c.hour >= first_hour)
            .group_by(hours.c.key)
            .order_by(desc("junk"), hours.c.key)
            .limit(top)
        ).all()
        keys = [row.key for row in ranked]
        reporters = _window_reporters(connection, kind, first_hour, keys)
        counts = {row.key: (int(row.junk), int(row.all)) for row in ranked}
    else:
        rh = m.offender_reporter_hours
        ranked = connection.execute(
            select(rh.c.key, func.count(func.distinct(rh.c.reporter)).label("n"))
            .where(rh.c.kind == kind, rh.c.hour >= first_hour)
            .group_by(rh.c.key)
            .order_by(desc("n"), rh.c.key)
            .limit(top)
        ).all()
        keys = [row.key for row in ranked]
        reporters = {row.key: int(row.n) for row in ranked}
        counts = _window_counts(connection, kind, first_hour, keys)
    seen = _seen(connection, kind, keys)
    return [
        OffenderRow(
            kind,
            key,
            counts.get(key, (0, 0))[0],
            reporters.get(key, 0),
            counts.get(key, (0, 0))[1],
            *seen.get(key, ("", "")),
        )
        for key in keys
    ]


def check_country(text: str) -> str:
    code = text.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        raise ConfigError(f"--country {text[:20]!r}: give an ISO 3166-1 alpha-2 code, such as DE or US")
    return code


def _top_in_country(
    connection: Connection, kind: str, country: str, *, since: datetime | None, top: int, sort: Sort
) -> list[OffenderRow]:
    """Offenders counted over the reports whose source is in `country` (read from the reports, not the
    hourly aggregates, which know no countries: a country's reports in the window are the cost)."""
    o, r = m.report_offenders, m.reports
    junk = r.c.junk.is_(True)
    reports = func.count().filter(junk).label("junk")
    reporters = func.count(func.distinct(r.c.reporter)).filter(junk).label("reporters")
    query = (
        select(
            o.c.key,
            reports,
            reporters,
            func.count().label("all"),
            func.min(o.c.seen_at).label("first"),
            func.max(o.c.seen_at).label("last"),
        )
        .select_from(o.join(r, r.c.report_id == o.c.report_id))
        .where(o.c.kind == kind, r.c.source_country == country)
        .group_by(o.c.key)
    )
    if since is not None:
        query = query.where(o.c.seen_at >= since, r.c.seen_at >= since)
    order: tuple[Any, ...] = (
        (desc("junk"), desc("reporters")) if sort == "reports" else (desc("reporters"), desc("junk"))
    )
    rows = connection.execute(query.order_by(*order, o.c.key).limit(top)).all()
    return [
        OffenderRow(
            kind, row.key, int(row.junk), int(row.reporters), int(row.all), _iso(row.first), _iso(row.last)
        )
        for row in rows
    ]


def _top_all_time(connection: Connection, kind: str, top: int, sort: Sort) -> list[OffenderRow]:
    o = m.offenders
    order = (
        (desc(o.c.junk_reports), desc(o.c.reporters))
        if sort == "reports"
        else (desc(o.c.reporters), desc(o.c.junk_reports))
    )
    rows = connection.execute(select(o).where(o.c.kind == kind).order_by(*order, o.c.key).limit(top)).all()
    return [
        OffenderRow(
            kind, r.key, r.junk_reports, r.reporters, r.reports, _iso(r.first_seen), _iso(r.last_seen)
        )
        for r in rows
    ]


def _window_reporters(connection: Connection, kind: str, first_hour: int, keys: list[str]) -> dict[str, int]:
    if not keys:
        return {}
    rh = m.offender_reporter_hours
    rows = connection.execute(
        select(rh.c.key, func.count(func.distinct(rh.c.reporter)))
        .where(rh.c.kind == kind, rh.c.hour >= first_hour, rh.c.key.in_(keys))
        .group_by(rh.c.key)
    ).all()
    return {key: int(n) for key, n in rows}


def _window_counts(
    connection: Connection, kind: str, first_hour: int, keys: list[str]
) -> dict[str, tuple[int, int]]:
    if not keys:
        return {}
    hours = m.offender_hours
    rows = connection.execute(
        select(hours.c.key, func.sum(hours.c.junk_reports), func.sum(hours.c.reports))
        .where(hours.c.kind == kind, hours.c.hour >= first_hour, hours.c.key.in_(keys))
        .group_by(hours.c.key)
    ).all()
    return {key: (int(junk), int(total)) for key, junk, total in rows}


def _seen(connection: Connection, kind: str, keys: list[str]) -> dict[str, tuple[str, str]]:
    if not keys:
        return {}
    o = m.offenders
    rows = connection.execute(
        select(o.c.key, o.c.first_seen, o.c.last_seen).where(o.c.kind == kind, o.c.key.in_(keys))
    ).all()
    return {key: (_iso(first), _iso(last)) for key, first, last in rows}


def _iso(moment: datetime | None) -> str:
    return utc(moment).isoformat() if moment is not None else ""


@dataclass(frozen=True, slots=True)
class OffenderDetail:
    kind: str
    key: str
    reports: int
    junk_reports: int
    reporters: int
    first_seen: str
    last_seen: str
    feedback_types: dict[str, int]
    timeline: list[dict[str, Any]]
    """Daily junk and total report counts over the last `days` days (UTC), oldest first."""
    related: dict[str, list[dict[str, Any]]]
    """Other offender keys seen in the same reports (e.g. the IPs a tenant used), most frequent first."""
    latest_reports: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        # Shallow: the fields hold plain lists and dicts already (asdict's deep copy cost ~2 ms a call).
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class _DetailStatements:
    """`offender_detail`'s statements, built once: constructing a select costs more Python than running
    a small one (the console shows an offender per click)."""

    def __init__(self) -> None:
        o, hours, links, r = m.offenders, m.offender_hours, m.report_offenders, m.reports
        kind: BindParameter[str] = bindparam("kind")
        key: BindParameter[str] = bindparam("key")
        self.totals = select(o).where(o.c.kind == kind, o.c.key == key)
        # Integer division on both databases (days since the epoch); the constant inlined, as GROUP BY
        # must repeat the very expression of the select list.
        day_of = hours.c.hour.op("/")(literal_column("24")).label("day")
        self.days = (
            select(day_of, func.sum(hours.c.junk_reports), func.sum(hours.c.reports))
            .where(hours.c.kind == kind, hours.c.key == key, hours.c.hour >= bindparam("first_hour"))
            .group_by(day_of)
            .order_by(day_of)
        )
        recent_ids = (
            select(links.c.report_id)
            .where(links.c.kind == kind, links.c.key == key)
            .order_by(desc(links.c.seen_at))
            .limit(RELATED_SAMPLE)
            .subquery()
        )
        counted = (
            select(
                links.c.kind,
                links.c.key,
                func.count().label("n"),
                func.row_number()
                .over(partition_by=links.c.kind, order_by=(desc(func.count()), links.c.key))
                .label("rank"),
            )
            .where(links.c.report_id.in_(select(recent_ids.c.report_id)))
            .where((links.c.kind != kind) | (links.c.key != key))
            .group_by(links.c.kind, links.c.key)
            .subquery()
        )
        self.related = (  # only the top `related_limit` of each kind leave the database
            select(counted.c.kind, counted.c.key, counted.c.n)
            .where(counted.c.rank <= bindparam("related_limit"))
            .order_by(desc(counted.c.n), counted.c.kind, counted.c.key)
        )
        self.latest = (
            select(
                r.c.report_id,
                r.c.seen_at,
                r.c.format,
                r.c.feedback_type,
                r.c.reporter,
                r.c.source_ip,
                r.c.from_domain,
                r.c.subject,
            )
            .join(links, links.c.report_id == r.c.report_id)
            .where(links.c.kind == kind, links.c.key == key)
            .order_by(desc(links.c.seen_at))
            .limit(bindparam("latest"))
        )


_DETAIL = _DetailStatements()


def offender_detail(
    connection: Connection,
    kind: str,
    key: str,
    *,
    now: datetime,
    days: int = 30,
    latest: int = 20,
    related_limit: int = 10,
) -> OffenderDetail | None:
    check_kind(kind)
    key = typed_key(kind, key)
    params = {"kind": kind, "key": key}
    row = connection.execute(_DETAIL.totals, params).first()
    if row is None:
        return None
    feedback = {name: int(getattr(row, column)) for name, column in m.FEEDBACK_COLUMNS.items()}
    first_hour = epoch_hour(now - timedelta(days=days))
    days_rows = connection.execute(_DETAIL.days, {**params, "first_hour": first_hour}).all()
    timeline = [
        {
            "day": datetime.fromtimestamp(int(day) * 86400, UTC).date().isoformat(),
            "reports": int(junk),
            "all_reports": int(total),
        }
        for day, junk, total in days_rows
    ]
    related_rows = connection.execute(_DETAIL.related, {**params, "related_limit": related_limit}).all()
    related: dict[str, list[dict[str, Any]]] = {}
    for other_kind, other_key, n in related_rows:
        related.setdefault(other_kind, []).append({"key": other_key, "reports": int(n)})
    latest_rows = connection.execute(_DETAIL.latest, {**params, "latest": latest}).all()
    latest_reports = [
        {
            "report_id": x.report_id,
            "seen_at": _iso(x.seen_at),
            "format": x.format,
            "feedback_type": x.feedback_type,
            "reporter": x.reporter,
            "source_ip": x.source_ip,
            "from_domain": x.from_domain,
            "subject": x.subject,
        }
        for x in latest_rows
    ]
    return OffenderDetail(
        kind=kind,
        key=key,
        reports=int(row.reports),
        junk_reports=int(row.junk_reports),
        reporters=int(row.reporters),
        first_seen=_iso(row.first_seen),
        last_seen=_iso(row.last_seen),
        feedback_types=feedback,
        timeline=timeline,
        related=related,
        latest_reports=latest_reports,
    )


def report_document(connection: Connection, report_id: str) -> dict[str, Any] | None:
    r = m.reports
    document = connection.execute(select(r.c.document).where(r.c.report_id == report_id)).scalar_one_or_none()
    return json.loads(document) if document is not None else None


def report_raw(connection: Connection, report_id: str) -> bytes | None:
    r, raw = m.reports, m.raw_messages
    data = connection.execute(
        select(raw.c.data).join(r, r.c.input_sha256 == raw.c.sha256).where(r.c.report_id == report_id)
    ).scalar_one_or_none()
    return decompress(data) if data is not None else None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    received_at: str
    source: str
    reason: str
    size: int
    input_sha256: str


def dead_letters(connection: Connection, *, limit: int = 50) -> list[DeadLetter]:
    d = m.deadletters
    rows = connection.execute(
        select(d.c.id, d.c.received_at, d.c.source, d.c.reason, d.c.size, d.c.input_sha256)
        .order_by(desc(d.c.id))
        .limit(limit)
    ).all()
    return [DeadLetter(r.id, _iso(r.received_at), r.source, r.reason, r.size, r.input_sha256) for r in rows]


def dead_letter(connection: Connection, letter_id: int) -> tuple[DeadLetter, bytes] | None:
    d = m.deadletters
    row = connection.execute(select(d).where(d.c.id == letter_id)).first()
    if row is None:
        return None
    letter = DeadLetter(row.id, _iso(row.received_at), row.source, row.reason, row.size, row.input_sha256)
    return letter, decompress(row.data)
