"""The report store on SQLite and PostgreSQL: idempotence, aggregates, windows, not-spam, dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import LargeBinary, func, select

from ingest.runner import ParseOptions, to_stored
from ingest.sources import RawMessage
from sinks import models as m
from sinks.queries import (
    dead_letter,
    dead_letters,
    offender_detail,
    report_document,
    report_raw,
    top_offenders,
)
from sinks.store import ReportStore
from sinks.stored import StoredMessage
from tests.conftest import SAMPLES
from tests.mail import JUNK_HEADERS, arf, forward, junk, message

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
OPTIONS = ParseOptions()
TRAP = ParseOptions(trap=True)


def stored(
    raw: bytes, *, at: datetime = NOW, options: ParseOptions = OPTIONS, source: str = "test"
) -> StoredMessage:
    return to_stored(RawMessage(raw, source), options, at)


def forward_from(reporter: str, *, ip: str = "8.8.4.4", subject: str = "Fwd: spam") -> bytes:
    headers = [(k, v.replace("8.8.4.4", ip)) for k, v in JUNK_HEADERS]
    return forward([message(headers)], sender=f"{reporter} <{reporter}>", subject=subject)


def count(store: ReportStore, table: object) -> int:
    with store.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_reingest_changes_nothing(store: ReportStore) -> None:
    batch = [
        stored((SAMPLES / name).read_bytes())
        for name in ("flanker_fbl_aol.eml", "sisimai_arf-01_smp-fbl.eml")
    ]
    batch.append(stored(junk()))  # not a report: dead letter
    first = store.write(batch)
    assert (first.reports, first.duplicates, first.dead_lettered) == (2, 0, 1)
    tables = (
        m.reports,
        m.offenders,
        m.offender_hours,
        m.report_offenders,
        m.report_urls,
        m.deadletters,
        m.raw_messages,
        m.offender_reporters,
    )
    before = {t.name: count(store, t) for t in tables}
    with store.connect() as connection:
        totals = connection.execute(select(m.offenders).order_by(m.offenders.c.kind, m.offenders.c.key)).all()
    second = store.write(batch)
    assert (second.reports, second.duplicates) == (0, 2)
    assert {t.name: count(store, t) for t in tables} == before
    with store.connect() as connection:
        assert (
            connection.execute(select(m.offenders).order_by(m.offenders.c.kind, m.offenders.c.key)).all()
            == totals
        )


def test_one_junk_many_reporters(store: ReportStore) -> None:
    batch = [stored(forward_from(f"user{i}@isp{i}.example")) for i in range(3)]
    batch.append(stored(forward_from("user0@isp0.example", subject="Fwd: again")))  # same reporter, again
    batch.append(stored(arf("abuse", junk(), fields=[("Source-IP", "8.8.4.4")])))
    result = store.write(batch)
    assert result.reports == 5
    with store.connect() as connection:
        (row,) = top_offenders(connection, "ip", now=NOW, top=1)
        assert (row.key, row.reports, row.reporters) == ("8.8.4.4", 5, 4)
        (by_reporters,) = top_offenders(connection, "ip", now=NOW, top=1, sort="reporters")
        assert by_reporters.reporters == 4


def test_windows(store: ReportStore) -> None:
    ages = {
        "1.1.1.1": [timedelta(hours=2)],
        "2.2.2.2": [timedelta(days=3), timedelta(days=4)],
        "3.3.3.3": [timedelta(days=20)] * 3,
    }
    batch = [
        stored(forward_from(f"r{n}@x.example", ip=ip, subject=f"Fwd: {ip} {n}"), at=NOW - age)
        for ip, list_of_ages in ages.items()
        for n, age in enumerate(list_of_ages)
    ]
    store.write(batch)
    with store.connect() as connection:

        def window(since: timedelta | None) -> dict[str, int]:
            rows = top_offenders(connection, "ip", now=NOW, since=NOW - since if since else None, top=10)
            return {row.key: row.reports for row in rows}

        assert window(timedelta(hours=24)) == {"1.1.1.1": 1}
        assert window(timedelta(days=7)) == {"2.2.2.2": 2, "1.1.1.1": 1}
        assert window(None) == {"3.3.3.3": 3, "2.2.2.2": 2, "1.1.1.1": 1}
        ranked = top_offenders(
            connection, "ip", now=NOW, since=NOW - timedelta(days=7), top=10, sort="reporters"
        )
        assert [(r.key, r.reporters) for r in ranked] == [("2.2.2.2", 2), ("1.1.1.1", 1)]


def test_every_offender_kind(store: ReportStore) -> None:
    tenant = "cba1030d-af07-487f-8f7b-30d91dbfbfeb"
    exo = message(
        [
            (
                "Received",
                "from mail-db8.outbound.protection.outlook.com (mail-db8.outbound.protection.outlook.com "
                "[40.107.20.107]) by mx.isp.example (Postfix) with ESMTPS id 1; Mon",
            ),
            ("X-MS-Exchange-CrossTenant-Id", tenant),
            ("From", "Phish <x@evil.example>"),
            ("Subject", "hi"),
            ("Return-Path", "<b@bounce.example>"),
            ("DKIM-Signature", "v=1; d=evil.onmicrosoft.com; s=s; b=x"),
        ],
        body="Log in at https://login.evil-site.co.uk/x\n",
    )
    store.write([stored(exo, options=TRAP)])
    expected = {
        "ip": "40.107.20.107",
        "network": "40.107.20.0/24",
        "tenant": tenant,
        "from_domain": "evil.example",
        "mail_from_domain": "bounce.example",
        "dkim_domain": "evil.onmicrosoft.com",
        "url_domain": "evil-site.co.uk",
    }
    with store.connect() as connection:
        for kind, key in expected.items():
            rows = top_offenders(connection, kind, now=NOW, top=5)
            assert [r.key for r in rows] == [key], kind
        detail = offender_detail(connection, "tenant", tenant, now=NOW)
        assert detail is not None
        assert detail.related["ip"] == [{"key": "40.107.20.107", "reports": 1}]


def test_not_spam_never_counts_as_junk(store: ReportStore) -> None:
    store.write(
        [
            stored(arf("not-spam", junk(), fields=[("Source-IP", "8.8.4.4")])),
            stored(
                arf(
                    "abuse",
                    junk(headers=[(k, v.replace("8.8.4.4", "9.9.9.9")) for k, v in JUNK_HEADERS]),
                    fields=[("Source-IP", "9.9.9.9")],
                )
            ),
        ]
    )
    with store.connect() as connection:
        rows = {r.key: r for r in top_offenders(connection, "ip", now=NOW, top=10)}
        assert (rows["8.8.4.4"].reports, rows["8.8.4.4"].reporters, rows["8.8.4.4"].all_reports) == (0, 0, 1)
        assert rows["9.9.9.9"].reports == 1
        assert top_offenders(connection, "ip", now=NOW, top=10)[0].key == "9.9.9.9"
        detail = offender_detail(connection, "ip", "8.8.4.4", now=NOW)
        assert detail is not None and detail.feedback_types["not-spam"] == 1 and detail.junk_reports == 0


def test_dead_letters_keep_raw_bytes_and_reason(store: ReportStore) -> None:
    raw = junk()
    store.write([stored(raw, source="inbox/1")])
    with store.connect() as connection:
        (letter,) = dead_letters(connection)
        assert letter.reason.startswith("not an abuse report")
        assert letter.source == "inbox/1"
        found = dead_letter(connection, letter.id)
        assert found is not None and found[1] == raw


def test_report_document_and_raw_evidence(store: ReportStore) -> None:
    raw = (SAMPLES / "flanker_forward_message-rfc822_attachment.eml").read_bytes()
    item = stored(raw)
    store.write([item])
    report = item.reports[0]
    with store.connect() as connection:
        assert report_document(connection, report.report_id) == report.model_dump(mode="json")
        assert report_raw(connection, report.report_id) == raw
        assert report_document(connection, "missing") is None


def test_offender_detail_timeline_and_latest(store: ReportStore) -> None:
    store.write(
        [
            stored(forward_from(f"r{i}@x.example", subject=f"Fwd: {i}"), at=NOW - timedelta(days=i))
            for i in range(3)
        ]
    )
    with store.connect() as connection:
        detail = offender_detail(connection, "ip", "8.8.4.4", now=NOW)
    assert detail is not None
    assert [d["reports"] for d in detail.timeline] == [1, 1, 1]
    assert len(detail.latest_reports) == 3
    assert detail.latest_reports[0]["reporter"] == "r0@x.example"
    assert detail.related["from_domain"] == [{"key": "watches.example.com", "reports": 3}]


def test_migrations_match_the_models(store: ReportStore) -> None:
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), m.metadata)
    assert diff == []


def test_array_literal_round_trips_hostile_text(database_url: str) -> None:
    """Every value written to PostgreSQL goes through `array_literal`; mail text is hostile."""
    if not database_url.startswith("postgresql"):
        return  # SQLite takes plain executemany: nothing to encode
    from sqlalchemy import ARRAY, Text, bindparam, cast, create_engine, select

    from sinks.store import array_literal

    values = [
        "plain",
        "",
        "NULL",
        'a "quoted" b',
        "back\\slash\\\\",
        "{brace},comma",
        "tab\tnew\nline",
        "ünïcödé ☃",
        "nul\x00byte",
        None,
        " lead and trail ",
    ]
    engine = create_engine(database_url)
    with engine.connect() as connection:
        got = connection.execute(
            select(cast(bindparam("v", array_literal(values), type_=Text), ARRAY(Text)))
        ).scalar()
        raw = connection.execute(
            select(cast(bindparam("b", array_literal([b"\x00\xff\\x", b""]), type_=Text), ARRAY(LargeBinary)))
        ).scalar()
    engine.dispose()
    assert got == [v.replace("\x00", "") if v is not None else None for v in values]
    assert raw == [b"\x00\xff\\x", b""]


def test_a_connection_lost_as_a_bare_socket_error_is_unavailable_not_a_crash() -> None:
    """pg8000 lets some resets out as ConnectionResetError; callers retry StoreUnavailable."""
    from sinks.store import StoreUnavailable, store_errors

    reset = pytest.raises(StoreUnavailable, match=r"store write failed: .*Connection reset by peer")
    with reset, store_errors("store write failed"):
        raise ConnectionResetError(104, "Connection reset by peer")


def test_the_store_knows_its_newest_migration() -> None:
    """A store at SCHEMA_REVISION is opened without Alembic: it must be the head of the migrations."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from sinks.store import MIGRATIONS, SCHEMA_REVISION

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION


def test_an_older_store_is_migrated_on_open(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from sinks.store import MIGRATIONS, SCHEMA_REVISION, make_engine, schema_revision

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    assert schema_revision(engine) == "0001"
    ReportStore.open(url).close()
    assert schema_revision(engine) == SCHEMA_REVISION
    engine.dispose()
