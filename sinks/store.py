"""The SQL report store: one transaction per batch writes reports, evidence, dead letters and aggregates.

Re-writing a report that is already stored changes nothing (unique `report_id`, aggregates updated only
for rows actually inserted), so replays after a crash neither lose nor double-count.
"""

from __future__ import annotations

import fcntl
import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    LargeBinary,
    Text,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from abusepipe.errors import AbusepipeError, Unavailable
from sinks import models as m
from sinks.stored import BatchResult, PreparedReport, StoredMessage, epoch_hour

log = logging.getLogger("abusepipe.store")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SCHEMA_REVISION = "0008"
"""The newest migration (the head of `migrations/versions`; a test holds the two together). A store at this
revision is opened without loading Alembic at all: the MTA pipe opens the store once per message."""


class StoreError(AbusepipeError):
    """The store failed in a way a retry will not fix (schema, constraint, bad URL)."""


class StoreUnavailable(StoreError, Unavailable):
    """The database cannot be reached or refused the transaction for now: retry later."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # durable before we acknowledge
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if url.startswith("postgresql+pg8000"):
        from sinks import pg8000_statements  # noqa: PLC0415 (only a PostgreSQL store loads pg8000)

        pg8000_statements.install()
        engine = create_engine(url, pool_pre_ping=True, connect_args={"timeout": CONNECT_TIMEOUT})
        event.listen(engine, "do_connect", _pg8000_nodelay_socket)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _pg8000_nodelay_socket(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> Any:
    """pg8000 leaves Nagle's algorithm on; a statement sent in several segments then waits for the
    server's delayed ACK (40 ms each). Hand it a TCP socket with TCP_NODELAY instead."""
    if params.get("unix_sock") or params.get("ssl_context"):
        return None  # SQLAlchemy connects as usual
    host = params.get("host", "localhost")
    port = int(params.get("port", 5432))
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL at {host}:{port}: {exc.strerror or exc}"
        ) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.settimeout(None)
    options = {k: v for k, v in params.items() if k not in ("host", "port")}
    import pg8000.legacy  # noqa: PLC0415 - SQLAlchemy's dialect has imported it already by now

    # pg8000.connect() does not pass `sock` on; its DB-API Connection class does.
    return pg8000.legacy.Connection(sock=sock, **options)


def schema_revision(engine: Engine) -> str | None:
    """The store's migration revision, or None when it has none yet (a new database)."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None  # no such table; a database that cannot be reached fails in `migrate` with the reason


def migrate(engine: Engine) -> None:
    """Bring the schema up to date (the same Alembic migrations on SQLite and PostgreSQL). One cheap query
    when it is (Alembic is imported only when a migration has to run)."""
    if schema_revision(engine) == SCHEMA_REVISION:
        return
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine), store_errors("cannot open the store"), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Processes starting together (several consumers) migrate one after the other.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


MIGRATION_LOCK_KEY = 0x61627573  # "abus": any constant shared by every abusepipe process


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """SQLite has no advisory locks: a lock file beside the database serialises migrations."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Database failures as the store's own errors. A lost connection is `StoreUnavailable` also when
    the driver lets it out as a bare socket error (pg8000 does, for a reset while PostgreSQL stops)."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise classify(exc, action) from exc
    except OSError as exc:
        raise StoreUnavailable(f"{action}: {_one_line(exc)}") from exc


def classify(exc: SQLAlchemyError, action: str) -> StoreError:
    """A retry may fix a lost or refused connection (`StoreUnavailable`); nothing fixes the rest."""
    transient = isinstance(exc, (OperationalError, InterfaceError)) or bool(
        getattr(exc, "connection_invalidated", False)
    )
    kind = StoreUnavailable if transient else StoreError
    return kind(f"{action}: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return " ".join(text.split())[:300]


PG_CHUNK = 5000
CONNECT_TIMEOUT = 15


def insert_rows(
    connection: Connection,
    table: Any,
    rows: list[dict[str, Any]],
    *,
    conflict: Callable[[Any], Any] | None = None,
    returning: Sequence[Any] = (),
) -> list[Any]:
    """Insert many rows in few round trips; `conflict` adds the ON CONFLICT clause.

    PostgreSQL gets one typed array per column and `INSERT ... SELECT FROM unnest(...)`: pg8000 sends a
    statement per row for executemany, and a multi-row VALUES with thousands of untyped parameters is
    slow to bind and plan. SQLite, in process, takes plain executemany."""
    if not rows:
        return []
    if connection.dialect.name == "postgresql":
        return _insert_rows_postgresql(connection, table, rows, conflict=conflict, returning=returning)
    stmt = sqlite.insert(table)
    if conflict is not None:
        stmt = conflict(stmt)
    if returning:
        return list(connection.execute(stmt.returning(*returning), rows).all())
    connection.execute(stmt, rows)
    return []


def _insert_rows_postgresql(
    connection: Connection,
    table: Any,
    rows: list[dict[str, Any]],
    *,
    conflict: Callable[[Any], Any] | None,
    returning: Sequence[Any],
) -> list[Any]:
    # Imported here: a process on the embedded SQLite store never loads the PostgreSQL dialect.
    from sqlalchemy.dialects import postgresql  # noqa: PLC0415
    from sqlalchemy.dialects.postgresql import ARRAY  # noqa: PLC0415

    out: list[Any] = []
    columns = list(rows[0])
    binary = [name for name in columns if isinstance(table.c[name].type, LargeBinary)]
    for start in range(0, len(rows), PG_CHUNK):
        chunk = rows[start : start + PG_CHUNK]
        arrays: list[Any] = []
        names: list[str] = []
        for index, name in enumerate(columns):
            if name in binary:
                continue
            literal = array_literal([row[name] for row in chunk])
            arrays.append(cast(bindparam(f"c{index}", literal, type_=Text), ARRAY(table.c[name].type)))
            names.append(name)
        blobs: dict[str, Any] = {}
        for index, name in enumerate(binary):
            # One binary parameter holds every blob of the column; integer arrays slice it server-side.
            # (Blobs inside an array literal are parsed as hex text by the server, slowly.)
            data = [row[name] or b"" for row in chunk]
            offsets, position = [], 1
            for item in data:
                offsets.append(position)
                position += len(item)
            blobs[name] = cast(bindparam(f"b{index}", b"".join(data), type_=LargeBinary), LargeBinary)
            for suffix, values in (("off", offsets), ("len", [len(item) for item in data])):
                arrays.append(
                    cast(bindparam(f"b{index}{suffix}", array_literal(values), type_=Text), ARRAY(Integer))
                )
                names.append(f"{name}__{suffix}")
        unnested = func.unnest(*arrays).table_valued(*names).render_derived()
        selected = [
            func.substring(blobs[name], unnested.c[f"{name}__off"], unnested.c[f"{name}__len"])
            if name in binary
            else unnested.c[name]
            for name in columns
        ]
        pg_stmt = postgresql.insert(table).from_select(columns, select(*selected))
        if conflict is not None:
            pg_stmt = conflict(pg_stmt)
        if returning:
            out.extend(connection.execute(pg_stmt.returning(*returning)).all())
        else:
            connection.execute(pg_stmt)
    return out


def array_literal(values: list[Any]) -> str:
    """A PostgreSQL array literal (`{"a","b",NULL}`), parsed by the server's `array_in`.

    Built with C-level string methods: pg8000's own array encoder walks every character in Python,
    which dominated the write time for report documents."""
    return "{" + ",".join(_element(value) for value in values) + "}"


def _element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return '"\\\\x' + value.hex() + '"'
    if isinstance(value, datetime):
        return '"' + value.isoformat() + '"'
    text = str(value).replace("\x00", "")  # PostgreSQL text cannot hold NUL
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _least(connection: Connection, a: Any, b: Any) -> Any:
    return func.least(a, b) if connection.dialect.name == "postgresql" else func.min(a, b)


def greatest(connection: Connection, a: Any, b: Any) -> Any:
    return func.greatest(a, b) if connection.dialect.name == "postgresql" else func.max(a, b)


class ReportStore:
    """Writes batches of ingested messages; reads go through `sinks.queries`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.after_commit: Callable[[BatchResult], None] | None = None
        """Called with each committed batch's result (the blocklist re-evaluates what it touched). It runs
        after the commit: its failure is logged and loses nothing (`blocklist evaluate` redoes it)."""

    @classmethod
    def open(cls, url: str) -> ReportStore:
        try:
            engine = make_engine(url)
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise StoreError(f"cannot open the store {url!r}: {_one_line(exc)}") from exc
        migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with store_errors("store query failed"), self.engine.connect() as connection:
            yield connection

    @contextmanager
    def transaction(self, *, rollback: bool = False) -> Iterator[Connection]:
        """One transaction, committed when the block ends normally (rolled back with `rollback`: a dry
        run) and rolled back when it raises."""
        with store_errors("store transaction failed"), self.engine.connect() as connection:
            transaction = connection.begin()
            try:
                yield connection
            except BaseException:
                transaction.rollback()
                raise
            if rollback:
                transaction.rollback()
            else:
                transaction.commit()

    def write(self, batch: Sequence[StoredMessage]) -> BatchResult:
        """Store a batch in one transaction. Raises `StoreUnavailable` when a retry may succeed."""
        with store_errors("store write failed"), self.engine.begin() as connection:
            result = write_batch(connection, batch)
        self.committed(result)
        return result

    def committed(self, result: BatchResult) -> None:
        if self.after_commit is None or not result.touched:
            return
        try:
            self.after_commit(result)
        except Exception as exc:  # the batch is durable; what follows from it can be redone
            log.warning("after the commit: %s: %s", type(exc).__name__, _one_line(exc))


def write_batch(connection: Connection, batch: Sequence[StoredMessage]) -> BatchResult:
    """Write within the caller's transaction."""
    raw_rows: dict[str, dict[str, Any]] = {}
    reports: list[PreparedReport] = []
    dead_rows: list[dict[str, Any]] = []
    for item in batch:
        if not item.prepared:
            dead_rows.append(
                dead_row(
                    item.sha256,
                    reason=item.reason,
                    source=item.source,
                    received_at=item.received_at,
                    size=item.size,
                    compressed=item.compressed,
                )
            )
            continue
        if item.sha256 not in raw_rows:
            raw_rows[item.sha256] = raw_row(item.sha256, len(item.raw), item.compressed, item.received_at)
        reports.extend(item.prepared)
    result = write_rows(connection, list(raw_rows.values()), reports, dead_rows)
    result.messages = len(batch)
    return result


def raw_row(sha256: str, size: int, compressed: bytes, received_at: datetime) -> dict[str, Any]:
    return {"sha256": sha256, "size": size, "data": compressed, "received_at": received_at}


def write_rows(
    connection: Connection,
    raw_rows: list[dict[str, Any]],
    reports: Sequence[PreparedReport],
    dead_rows: list[dict[str, Any]],
) -> BatchResult:
    """Write evidence (`raw_row`), reports and dead letters (`dead_row`) within the caller's
    transaction (the Kafka consumer adds its offsets to the same one); aggregates only count reports
    not stored before."""
    result = BatchResult()
    by_id: dict[str, PreparedReport] = {}
    for report in reports:
        by_id.setdefault(report.report_id, report)
    unique_raw = list({row["sha256"]: row for row in raw_rows}.values())
    insert_rows(connection, m.raw_messages, unique_raw, conflict=do_nothing)
    report_rows = [_report_row(report) for report in by_id.values()]
    inserted = insert_rows(
        connection, m.reports, report_rows, conflict=do_nothing, returning=[m.reports.c.report_id]
    )
    new_ids = [row[0] for row in inserted]
    new_letters: list[Any] = []
    if dead_rows:
        unique = list({row["input_sha256"]: row for row in dead_rows}.values())
        new_letters = insert_rows(
            connection,
            m.deadletters,
            unique,
            conflict=do_nothing,
            returning=[m.deadletters.c.received_at],
        )
    result.dead_lettered = len(dead_rows)
    result.reports = len(new_ids)
    result.duplicates = len(reports) - len(new_ids)  # stored before, or twice in this batch
    new = [by_id[report_id] for report_id in sorted(new_ids)]
    if new:
        _aggregate(connection, new)
        result.touched = {key for report in new if report.junk for key in report.keys}
    _count_hours(connection, new, [row[0] for row in new_letters])
    return result


def _count_hours(connection: Connection, new: list[PreparedReport], letters: list[datetime]) -> None:
    """Reports and dead letters per hour, for the console's overview (only what was new)."""
    hours: dict[int, list[int]] = {}
    for report in new:
        counts = hours.setdefault(epoch_hour(report.seen_at), [0, 0, 0])
        counts[0] += 1
        counts[1] += report.junk
    for received in letters:
        hours.setdefault(epoch_hour(utc_moment(received)), [0, 0, 0])[2] += 1
    if not hours:
        return
    table = m.report_hours

    def add(stmt: Any) -> Any:
        return stmt.on_conflict_do_update(
            index_elements=["hour"],
            set_={
                name: table.c[name] + stmt.excluded[name]
                for name in ("reports", "junk_reports", "dead_letters")
            },
        )

    rows = [
        {"hour": hour, "reports": c[0], "junk_reports": c[1], "dead_letters": c[2]}
        for hour, c in sorted(hours.items())
    ]
    insert_rows(connection, table, rows, conflict=add)


def utc_moment(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes: everything is stored in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def dead_row(
    sha256: str, *, reason: str, source: str, received_at: datetime, size: int, compressed: bytes
) -> dict[str, Any]:
    return {
        "input_sha256": sha256,
        "reason": reason[:2000],
        "source": source[:2000],
        "received_at": received_at,
        "size": size,
        "data": compressed,
    }


_REPORT_COLUMNS = [c.name for c in m.reports.columns]


def _report_row(report: PreparedReport) -> dict[str, Any]:
    return {name: getattr(report, name) for name in _REPORT_COLUMNS}


def _aggregate(connection: Connection, new: list[PreparedReport]) -> None:
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    hours: dict[tuple[str, str, int], list[int]] = {}
    links: list[dict[str, Any]] = []
    urls: list[dict[str, Any]] = []
    reporter_pairs: set[tuple[str, str, str]] = set()
    reporter_hours: set[tuple[str, str, int, str]] = set()
    trap_hours: set[tuple[str, str, int, str]] = set()
    for report in new:
        junk = report.junk
        moment = report.seen_at
        hour = epoch_hour(moment)
        reporter = report.reporter
        column = m.FEEDBACK_COLUMNS.get(report.feedback_type, "n_other")
        for url, host, domain in report.urls:
            urls.append(
                {"report_id": report.report_id, "url": url, "host": host, "registrable_domain": domain}
            )
        for kind, key in report.keys:
            links.append({"kind": kind, "key": key, "report_id": report.report_id, "seen_at": moment})
            row = totals.get((kind, key))
            if row is None:
                row = totals[(kind, key)] = _empty_total(kind, key, moment)
            row["reports"] += 1
            row["junk_reports"] += junk
            row[column] += 1
            row["first_seen"] = min(row["first_seen"], moment)
            row["last_seen"] = max(row["last_seen"], moment)
            bucket = hours.setdefault((kind, key, hour), [0, 0])
            bucket[0] += 1
            bucket[1] += junk
            if junk:
                reporter_pairs.add((kind, key, reporter))
                reporter_hours.add((kind, key, hour, reporter))
                if report.format == "trap":
                    trap_hours.add((kind, key, hour, reporter))

    insert_rows(connection, m.report_offenders, links, conflict=do_nothing)
    insert_rows(connection, m.report_urls, urls)
    if reporter_hours:
        rows = [{"kind": k, "key": key, "hour": h, "reporter": r} for k, key, h, r in sorted(reporter_hours)]
        insert_rows(connection, m.offender_reporter_hours, rows, conflict=do_nothing)
    if trap_hours:
        rows = [{"kind": k, "key": key, "hour": h, "trap": t} for k, key, h, t in sorted(trap_hours)]
        insert_rows(connection, m.offender_trap_hours, rows, conflict=do_nothing)
    if reporter_pairs:
        rows = [{"kind": k, "key": key, "reporter": r} for k, key, r in sorted(reporter_pairs)]
        table = m.offender_reporters
        added = insert_rows(
            connection, table, rows, conflict=do_nothing, returning=[table.c.kind, table.c.key]
        )
        for kind, key in added:  # a reporter new to this offender: one more distinct reporter
            totals[(kind, key)]["reporters"] += 1
    _upsert_totals(connection, [totals[k] for k in sorted(totals)])
    hour_rows = [
        {"kind": k, "key": key, "hour": h, "reports": v[0], "junk_reports": v[1]}
        for (k, key, h), v in sorted(hours.items())
    ]

    def add_hours(stmt: Any) -> Any:
        table = m.offender_hours
        return stmt.on_conflict_do_update(
            index_elements=["kind", "key", "hour"],
            set_={
                "reports": table.c.reports + stmt.excluded.reports,
                "junk_reports": table.c.junk_reports + stmt.excluded.junk_reports,
            },
        )

    insert_rows(connection, m.offender_hours, hour_rows, conflict=add_hours)


def do_nothing(stmt: Any) -> Any:
    return stmt.on_conflict_do_nothing()


def _empty_total(kind: str, key: str, moment: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": kind,
        "key": key,
        "reports": 0,
        "junk_reports": 0,
        "reporters": 0,
        "first_seen": moment,
        "last_seen": moment,
    }
    for column in m.FEEDBACK_COLUMNS.values():
        row[column] = 0
    return row


def _upsert_totals(connection: Connection, rows: list[dict[str, Any]]) -> None:
    table = m.offenders

    def add(stmt: Any) -> Any:
        counters = ["reports", "junk_reports", "reporters", *m.FEEDBACK_COLUMNS.values()]
        set_ = {name: table.c[name] + stmt.excluded[name] for name in counters}
        set_["first_seen"] = _least(connection, table.c.first_seen, stmt.excluded.first_seen)
        set_["last_seen"] = greatest(connection, table.c.last_seen, stmt.excluded.last_seen)
        return stmt.on_conflict_do_update(index_elements=["kind", "key"], set_=set_)

    insert_rows(connection, table, rows, conflict=add)
