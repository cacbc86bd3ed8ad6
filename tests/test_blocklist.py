"""The listing policy on the write path, on SQLite and on a real PostgreSQL: distinct reporters, traps,
network escalation, TTL escalation, expiry, what is never listed, manual listings, re-evaluation; and
the Kafka path (ingest → broker → consume) lists like the embedded one."""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from abusepipe.errors import ConfigError
from blocklist import listings as bl
from blocklist.evaluator import ListingEvaluator
from blocklist.export import entries
from blocklist.policy import ListingPolicy
from ingest.runner import ParseOptions, to_stored
from ingest.sources import RawMessage
from sinks import models as m
from sinks.store import ReportStore
from sinks.stored import StoredMessage
from tests.mail import JUNK_HEADERS, arf, junk, message

T0 = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
TENANT = "cba1030d-af07-487f-8f7b-30d91dbfbfeb"
EXO_IP = "40.107.20.107"


def original(ip: str, *, sender: str = "offers@watches.example.com") -> bytes:
    marker = uuid.uuid4().hex[:12]
    headers = [
        (name, value.replace("8.8.4.4", ip).replace("junk-1@", f"junk-{marker}@"))
        for name, value in JUNK_HEADERS
    ]
    headers = [(n, f"Cheap <{sender}>" if n == "From" else v) for n, v in headers]
    return junk(headers=headers)


def report(
    ip: str, reporter: str, at: datetime, *, feedback: str = "abuse", inner: bytes | None = None
) -> StoredMessage:
    """An ARF report by `reporter`, dated `at`, about junk from `ip`."""
    raw = arf(feedback, inner or original(ip), fields=[("Source-IP", ip)])
    raw = raw.replace(b"fbl@isp.example", reporter.encode())
    raw = f"Date: {format_datetime(at)}\r\n".encode() + raw
    return to_stored(RawMessage(raw, "test"), ParseOptions(), at)


def trap_hit(ip: str, trap: str, at: datetime) -> StoredMessage:
    headers = [
        ("Received", f"from mx.trap.example ([10.1.1.1]) by trap.example; {format_datetime(at)}"),
        (
            "Received",
            f"from spammer.example ([{ip}]) by mx.trap.example (Postfix) with ESMTP; {format_datetime(at)}",
        ),
        ("Delivered-To", trap),
        ("From", "x@spam.example"),
        ("Subject", "win"),
        ("Message-ID", f"<{uuid.uuid4().hex}@spam.example>"),
    ]
    return to_stored(RawMessage(message(headers), "trap"), ParseOptions(trap=True), at)


def exo_junk() -> bytes:
    return message(
        [
            (
                "Received",
                "from mail-db8.outbound.protection.outlook.com (mail-db8.outbound.protection.outlook.com "
                f"[{EXO_IP}]) by mx.isp.example (Postfix) with ESMTPS id 1; Mon",
            ),
            ("X-MS-Exchange-CrossTenant-Id", TENANT),
            ("From", "Phish <x@evil.example>"),
            ("Subject", "hi"),
            ("Message-ID", f"<{uuid.uuid4().hex}@evil.example>"),
        ]
    )


@dataclass
class Desk:
    """A store with the listing policy attached, and a clock the test moves."""

    store: ReportStore
    policy: ListingPolicy
    now: datetime = T0

    def __post_init__(self) -> None:
        self.store.after_commit = ListingEvaluator(self.store.engine, self.policy, clock=lambda: self.now)

    def write(self, *messages: StoredMessage) -> None:
        self.store.write(list(messages))

    def reporters(self, ip: str, count: int, *, at: datetime | None = None, prefix: str = "r") -> None:
        moment = at or self.now
        self.write(*(report(ip, f"{prefix}{i}@isp{i}.example", moment) for i in range(count)))

    def listing(self, kind: str, key: str) -> bl.Listing | None:
        with self.store.connect() as connection:
            return bl.get(connection, kind, key)

    def state(self, kind: str, key: str) -> str:
        listing = self.listing(kind, key)
        return listing.effective_state(self.now) if listing is not None else "none"

    def events(self, kind: str, key: str) -> list[str]:
        with self.store.connect() as connection:
            return [c.event for c in reversed(bl.history(connection, kind, key))]

    def evaluate_all(self, policy: ListingPolicy | None = None) -> list[bl.Change]:
        with self.store.transaction() as connection:
            return bl.evaluate_all(connection, policy or self.policy, self.now, actor="test")

    def add(self, kind: str, key: str, **kwargs: object) -> list[bl.Change]:
        with self.store.transaction() as connection:
            return bl.add(
                connection, self.policy, kind, key, reason="by hand", actor="test", now=self.now, **kwargs
            )  # type: ignore[arg-type]

    def remove(self, kind: str, key: str, event: str = "delisted-by-analyst") -> list[bl.Change]:
        with self.store.transaction() as connection:
            return bl.remove(
                connection, self.policy, kind, key, reason="asked", actor="test", now=self.now, event=event
            )


@pytest.fixture
def desk(store: ReportStore) -> Iterator[Desk]:
    yield Desk(store, ListingPolicy())


def test_one_reporter_sending_ten_reports_lists_nothing(desk: Desk) -> None:
    desk.write(*(report("45.33.1.1", "same@isp.example", T0 - timedelta(minutes=i)) for i in range(10)))
    assert desk.state("ip", "45.33.1.1") == "none"
    desk.reporters("45.33.1.1", 1)  # a second reporter: two, not three
    assert desk.state("ip", "45.33.1.1") == "none"


def test_three_distinct_reporters_within_a_day_list_the_ip(desk: Desk) -> None:
    desk.write(report("45.33.1.2", "a@one.example", T0 - timedelta(hours=5)))
    desk.write(report("45.33.1.2", "b@two.example", T0 - timedelta(hours=1)))
    assert desk.state("ip", "45.33.1.2") == "none"
    desk.write(report("45.33.1.2", "c@three.example", T0 - timedelta(minutes=10)))
    listing = desk.listing("ip", "45.33.1.2")
    assert listing is not None and listing.in_force(T0)
    assert listing.origin == "policy" and listing.reason_code == "reports"
    assert "3 distinct reporters" in listing.reason
    assert listing.expires_at == T0 - timedelta(minutes=10) + timedelta(hours=24)  # from the last evidence
    assert desk.events("ip", "45.33.1.2") == ["listed"]
    assert desk.state("network", "45.33.1.0/24") == "none"  # one IP does not list its /24
    assert desk.state("from_domain", "watches.example.com") == "none"  # domain kinds are off by default


def test_reports_spread_wider_than_the_window_list_nothing(desk: Desk) -> None:
    # 12:20 the day before shares its hour bucket with the window's start (12:30): counted exactly
    desk.write(report("45.33.1.3", "a@one.example", T0 - timedelta(hours=24, minutes=10)))
    desk.write(report("45.33.1.3", "b@two.example", T0 - timedelta(hours=3)))
    desk.write(report("45.33.1.3", "c@three.example", T0))
    assert desk.state("ip", "45.33.1.3") == "none"
    desk.write(report("45.33.1.3", "d@four.example", T0 - timedelta(hours=23, minutes=50)))
    assert desk.state("ip", "45.33.1.3") == "listed"


def test_not_spam_and_opt_out_never_count(desk: Desk) -> None:
    desk.write(*(report("45.33.1.4", f"u{i}@isp{i}.example", T0, feedback="not-spam") for i in range(3)))
    desk.write(*(report("45.33.1.4", f"v{i}@isp{i}.example", T0, feedback="opt-out") for i in range(3)))
    assert desk.state("ip", "45.33.1.4") == "none"


def test_two_traps_list_and_one_trap_twice_does_not(desk: Desk) -> None:
    desk.write(
        trap_hit("45.33.2.1", "trap1@traps.example", T0), trap_hit("45.33.2.1", "trap1@traps.example", T0)
    )
    assert desk.state("ip", "45.33.2.1") == "none"
    desk.write(trap_hit("45.33.2.1", "trap2@traps.example", T0))
    listing = desk.listing("ip", "45.33.2.1")
    assert listing is not None and listing.reason_code == "traps"
    assert "trap" in listing.reason and "traps.example" not in listing.reason  # never the trap addresses


def test_four_listed_ips_list_their_network_and_it_follows_them(desk: Desk) -> None:
    ips = [f"45.33.3.{n}" for n in (1, 2, 3, 4)]
    for n, ip in enumerate(ips[:3]):
        desk.reporters(ip, 3, at=T0 + timedelta(minutes=n))
    assert desk.state("network", "45.33.3.0/24") == "none"
    desk.reporters(ips[3], 3, at=T0 + timedelta(minutes=3))
    network = desk.listing("network", "45.33.3.0/24")
    assert network is not None and network.in_force(T0) and network.reason_code == "network"
    assert network.expires_at == T0 + timedelta(hours=24)  # until the 4th IP would lapse: the earliest
    desk.now = T0 + timedelta(minutes=30)
    desk.remove("ip", "45.33.3.1")
    assert desk.state("network", "45.33.3.0/24") == "expired"
    assert desk.events("network", "45.33.3.0/24") == ["listed", "expired"]


def test_a_relisting_within_30_days_multiplies_the_ttl(desk: Desk) -> None:
    ip = "45.33.4.1"
    ttls = []
    for round_ in range(5):
        desk.reporters(ip, 3, prefix=f"round{round_}-")
        listing = desk.listing("ip", ip)
        assert listing is not None and listing.in_force(desk.now)
        assert listing.expires_at is not None
        ttls.append(listing.expires_at - desk.now)
        desk.now = listing.expires_at + timedelta(hours=1)  # it lapses; junk comes back an hour later
    assert ttls == [
        timedelta(hours=24),
        timedelta(days=4),
        timedelta(days=16),
        timedelta(days=30),
        timedelta(days=30),
    ]
    assert desk.events("ip", ip) == ["listed"] + ["expired", "relisted"] * 4
    desk.now += timedelta(days=31)  # a quiet month: back to the start
    desk.reporters(ip, 3, prefix="later-")
    listing = desk.listing("ip", ip)
    assert listing is not None and listing.expires_at == desk.now + timedelta(hours=24)


def test_expiry_needs_no_operator(desk: Desk) -> None:
    desk.reporters("45.33.5.1", 3)
    desk.now = T0 + timedelta(hours=24, seconds=1)
    assert desk.state("ip", "45.33.5.1") == "expired"  # read as expired before anything wrote it
    with desk.store.connect() as connection:
        assert bl.listings(connection, desk.now, state="listed") == []
        assert entries(connection, desk.now) == []
    with desk.store.transaction() as connection:
        changes = bl.expire_due(connection, desk.now)
    assert [(c.event, c.at) for c in changes] == [("expired", T0 + timedelta(hours=24))]
    with desk.store.transaction() as connection:
        assert bl.expire_due(connection, desk.now) == []


def test_after_a_delisting_only_new_evidence_relists(desk: Desk) -> None:
    desk.reporters("45.33.6.1", 3)
    desk.now = T0 + timedelta(minutes=5)
    desk.remove("ip", "45.33.6.1", event="delisted-by-sender")
    assert desk.evaluate_all() == []  # the same three reports do not list it again
    desk.reporters("45.33.6.1", 1, prefix="late-", at=T0 - timedelta(minutes=1))  # dated before: no
    assert desk.state("ip", "45.33.6.1") == "delisted"
    desk.reporters("45.33.6.1", 3, prefix="new-", at=desk.now + timedelta(minutes=1))
    assert desk.state("ip", "45.33.6.1") == "listed"
    assert desk.events("ip", "45.33.6.1") == ["listed", "delisted-by-sender", "relisted"]


def test_exchange_online_ips_are_never_listed_their_tenant_is(desk: Desk) -> None:
    desk.write(*(report(EXO_IP, f"r{i}@isp{i}.example", T0, inner=exo_junk()) for i in range(3)))
    assert desk.state("ip", EXO_IP) == "none"
    assert desk.state("tenant", TENANT) == "listed"
    with pytest.raises(ConfigError, match="shared platform"):
        desk.add("ip", EXO_IP)
    with pytest.raises(ConfigError, match="shared platform"):
        desk.add("network", "40.107.20.0/24")
    assert desk.add("ip", EXO_IP, force=True)[0].event == "listed"


def test_the_operators_allowlist_is_never_listed(store: ReportStore) -> None:
    policy = ListingPolicy.from_settings(
        kinds=("ip", "network", "tenant"),
        reporters=3,
        traps=2,
        window_hours=24,
        network_ips=4,
        ttl_hours=24,
        relist_factor=4,
        relist_window_days=30,
        max_ttl_days=30,
        allow=("45.33.7.0/28", TENANT.upper()),
    )
    desk = Desk(store, policy)
    desk.reporters("45.33.7.1", 3)
    desk.write(*(report(EXO_IP, f"r{i}@isp{i}.example", T0, inner=exo_junk()) for i in range(3)))
    desk.reporters("45.33.7.99", 3)
    assert desk.state("ip", "45.33.7.1") == "none"
    assert desk.state("tenant", TENANT) == "none"
    assert desk.state("ip", "45.33.7.99") == "listed"
    # A later allowlist entry delists on re-evaluation; the history says why.
    stricter = replace(policy, allow_networks=(*policy.allow_networks, ipaddress.ip_network("45.33.7.99/32")))
    changes = desk.evaluate_all(stricter)
    assert [(c.kind, c.key, c.event) for c in changes] == [("ip", "45.33.7.99", "delisted-by-analyst")]
    assert "allowed by the operator" in changes[0].reason


def test_private_addresses_are_never_listed_by_the_policy(desk: Desk) -> None:
    with desk.store.transaction() as connection:
        assert bl.evaluate_keys(connection, desk.policy, "ip", ["10.1.2.3", "192.168.1.1"], T0) == []
    assert desk.policy.never("ip", "127.0.0.2") == "a private or reserved address"


def test_manual_listings_stay_until_removed_by_hand(desk: Desk) -> None:
    desk.add("ip", "45.33.8.1")
    desk.add("ip", "45.33.8.2", ttl=timedelta(hours=2))
    desk.reporters("45.33.8.1", 3)  # evidence does not turn it into a policy listing
    desk.now = T0 + timedelta(days=400)
    desk.evaluate_all()
    manual = desk.listing("ip", "45.33.8.1")
    assert manual is not None and manual.in_force(desk.now) and manual.origin == "manual"
    assert manual.expires_at is None
    assert desk.state("ip", "45.33.8.2") == "expired"  # a TTL given by hand runs out
    with pytest.raises(bl.NotListed):
        desk.remove("ip", "45.33.8.2")
    desk.remove("ip", "45.33.8.1")
    assert desk.state("ip", "45.33.8.1") == "delisted"


def test_re_evaluation_is_idempotent_and_a_dry_run_changes_nothing(desk: Desk) -> None:
    desk.store.after_commit = None  # reports stored with the policy off ...
    for n in range(4):
        desk.reporters(f"45.33.9.{n}", 3)
    with desk.store.transaction(rollback=True) as connection:
        dry = bl.evaluate_all(connection, desk.policy, desk.now, actor="test")
    assert sorted((c.kind, c.key) for c in dry) == [
        ("ip", "45.33.9.0"),
        ("ip", "45.33.9.1"),
        ("ip", "45.33.9.2"),
        ("ip", "45.33.9.3"),
        ("network", "45.33.9.0/24"),
    ]
    assert desk.state("ip", "45.33.9.0") == "none"  # rolled back
    assert [c.document() for c in desk.evaluate_all()] == [c.document() for c in dry]  # ... then on
    assert desk.evaluate_all() == []


def test_extended_events_are_not_written_for_every_batch(desk: Desk) -> None:
    desk.reporters("45.33.10.1", 3)
    for minutes in range(5, 60, 5):
        desk.now = T0 + timedelta(minutes=minutes)
        desk.reporters("45.33.10.1", 3, prefix=f"m{minutes}-")
    listing = desk.listing("ip", "45.33.10.1")
    # looked at every ten minutes (EXTEND_EVERY): the evidence of minute 50 is the last one counted
    assert listing is not None and listing.expires_at == T0 + timedelta(minutes=50, hours=24)
    assert desk.events("ip", "45.33.10.1") == ["listed"]
    desk.now = T0 + timedelta(hours=2)
    desk.reporters("45.33.10.1", 3, prefix="later-")
    assert desk.events("ip", "45.33.10.1") == ["listed", "extended"]


def test_domain_kinds_when_on_never_list_shared_domains(store: ReportStore) -> None:
    policy = ListingPolicy(kinds=("ip", "network", "tenant", "from_domain"))
    desk = Desk(store, policy)
    desk.write(
        *(
            report(
                "45.33.11.1", f"r{i}@isp{i}.example", T0, inner=original("45.33.11.1", sender="x@gmail.com")
            )
            for i in range(3)
        )
    )
    desk.write(
        *(
            report(
                "45.33.11.2",
                f"r{i}@isp{i}.example",
                T0,
                inner=original("45.33.11.2", sender="x@shop.evil.example"),
            )
            for i in range(3)
        )
    )
    assert desk.state("from_domain", "gmail.com") == "none"
    assert desk.state("from_domain", "shop.evil.example") == "listed"
    with pytest.raises(ConfigError, match="shared domain"):
        desk.add("url_domain", "bit.ly")


def test_migration_0005_counts_the_trap_hits_a_store_holds(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import insert

    from sinks.store import MIGRATIONS, make_engine
    from sinks.stored import epoch_hour

    engine = make_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
    row = {
        "input_sha256": "0" * 64,
        "part": 0,
        "schema_version": 1,
        "feedback_type": "abuse",
        "junk": True,
        "seen_at": T0,
        "received_at": T0,
        "document": "{}",
    }
    with engine.begin() as connection:
        connection.execute(
            insert(m.reports),
            [
                {**row, "report_id": "t1", "format": "trap", "reporter": "t1@traps.example"},
                {**row, "report_id": "a1", "format": "arf", "reporter": "fbl@isp.example"},
            ],
        )
        connection.execute(
            insert(m.report_offenders),
            [
                {"report_id": "t1", "kind": "ip", "key": "45.33.12.1", "seen_at": T0},
                {"report_id": "a1", "kind": "ip", "key": "45.33.12.1", "seen_at": T0},
            ],
        )
    engine.dispose()
    ReportStore.open(database_url).close()  # upgrades to the head
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(m.offender_trap_hours)).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("ip", "45.33.12.1", epoch_hour(T0), "t1@traps.example")]


def test_blocklist_list_is_the_contract_document(desk: Desk) -> None:
    desk.reporters("45.33.13.1", 3)
    with desk.store.connect() as connection:
        documents = [x.document(desk.now) for x in bl.listings(connection, desk.now, state="listed")]
    assert documents == [
        {
            "kind": "ip",
            "key": "45.33.13.1",
            "state": "listed",
            "origin": "policy",
            "listed_at": T0.isoformat(),
            "expires_at": (T0 + timedelta(hours=24)).isoformat(),
            "reason": "3 distinct reporters reported junk from it within 24 h",
            "reason_code": "reports",
            "last_evidence_at": T0.isoformat(),
            "ended_at": None,
        }
    ]
    json.dumps(documents)


# --- the Kafka path: consume evaluates the batches it commits ----------------------------------------


@pytest.mark.integration
def test_consume_lists_like_the_embedded_path(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    from tests.test_kafka import make_pipeline

    pipeline = make_pipeline(kafka_bootstrap, postgres_url, tmp_path)
    try:
        now = datetime.now(UTC)
        for i in range(3):
            raw = report("45.33.14.1", f"r{i}@isp{i}.example", now).raw
            (tmp_path / f"r{i}.eml").write_bytes(raw)
        pipeline.ingest(*(tmp_path / f"r{i}.eml" for i in range(3)))
        consumer = pipeline.consumer()
        pipeline.wait_for(3, alive=[consumer])
        listed: list[dict[str, object]] = []
        for _ in range(50):
            done = pipeline.run("blocklist", "list", "--state", "listed", "--format", "json")
            assert done.returncode == 0, done.stderr.decode()
            listed = json.loads(done.stdout)
            if listed:
                break
            time.sleep(0.2)
        assert [(x["kind"], x["key"], x["state"]) for x in listed] == [("ip", "45.33.14.1", "listed")]
        assert pipeline.stop(consumer) == 0
    finally:
        pipeline.close()


@pytest.mark.parametrize("chunk", [10_000, 2])
def test_the_json_export_is_the_list_document_on_both_databases(
    desk: Desk, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blocklist import export

    monkeypatch.setattr(export, "JSON_CHUNK", chunk)  # PostgreSQL joins the documents by chunks
    desk.reporters("45.33.15.1", 3)
    for n in range(2, 6):
        desk.reporters(f"45.33.15.{n}", 3, prefix=f"q{n}-")
    desk.add("network", "198.51.100.0/24")
    with desk.store.connect() as connection:
        text, count = export.json_export(connection, desk.now)
        exported = json.loads(text)
        listed = [x.document(desk.now) for x in bl.listings(connection, desk.now, state="listed")]
    assert count == len(exported) == len(listed) == 7  # five IPs, their /24, the manual network
    assert [(d["kind"], d["key"]) for d in exported] == sorted((d["kind"], d["key"]) for d in exported)
    fields = ["kind", "key", "state", "origin", "reason", "reason_code"]
    assert sorted([d[f] for f in fields] for d in exported) == sorted([d[f] for f in fields] for d in listed)
    for document in exported:
        match = next(x for x in listed if x["key"] == document["key"])
        for moment in ("listed_at", "expires_at"):
            same = document[moment] == match[moment] or (
                document[moment] is not None
                and datetime.fromisoformat(document[moment]) == datetime.fromisoformat(str(match[moment]))
            )
            assert same, (moment, document[moment], match[moment])
