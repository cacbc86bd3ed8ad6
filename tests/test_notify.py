"""Onward reporting end to end: reports in a store, contacts from a real DNS server (dnsmasq) and a
loopback RDAP stand-in, mails through the outbox to a real SMTP server on loopback; ARF that abusepipe's
own parser reads back, digests, Microsoft's format, redaction, throttling, opt-out, dry run."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from ingest.runner import ParseOptions, to_stored
from ingest.sources import RawMessage
from notify.contacts import ContactFinder, ContactSources
from notify.onward import NotifyPolicy, OnwardReporter
from parsers import parse_message
from sinks import outbox
from sinks.mailer import MailRelay, OutboxSender
from sinks.store import ReportStore
from sinks.stored import StoredMessage
from tests.console import cli
from tests.mail import arf, forward
from tests.smtpsink import SmtpSink
from tests.test_blocklist import exo_junk, original
from tests.test_contacts import DnsServer, RdapStandIn

DESK = "abuse-desk@desk.example"


def report(ip: str, reporter: str, at: datetime) -> StoredMessage:
    raw = arf("abuse", original(ip), fields=[("Source-IP", ip)]).replace(
        b"fbl@isp.example", reporter.encode()
    )
    return to_stored(RawMessage(f"Date: {format_datetime(at)}\r\n".encode() + raw, "t"), ParseOptions(), at)


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[tuple[ReportStore, OnwardReporter, SmtpSink]]:
    dns_server, rdap_server, sink = DnsServer(tmp_path), RdapStandIn(), SmtpSink().start()
    store = ReportStore.open(database_url)
    sources = ContactSources(
        rdap_url=rdap_server.url, dns_server=("127.0.0.1", dns_server.port), dns_timeout=2.0
    )
    reporter = OnwardReporter(NotifyPolicy(sender=DESK, operator="desk.example"), ContactFinder(sources))
    try:
        yield store, reporter, sink
    finally:
        store.close()
        sink.stop()
        dns_server.stop()
        rdap_server.stop()


def deliver(store: ReportStore, sink: SmtpSink) -> None:
    sender = OutboxSender(store, MailRelay.parse(sink.relay, sender=DESK))
    _, failed = sender.flush()
    assert failed == 0


def test_new_junk_goes_to_each_network_once_in_the_right_form(
    world: tuple[ReportStore, OnwardReporter, SmtpSink],
) -> None:
    store, reporter, sink = world
    now = datetime.now(UTC)
    store.write([report("45.33.7.9", f"fbl{i}@isp{i}.example", now) for i in range(2)])  # Abusix: hoster
    store.write([report("45.33.8.1", f"user{i}@mail{i}.example", now) for i in range(7)])  # RDAP: a digest
    store.write([report("45.33.88.8", "x@isp.example", now)])  # nobody to tell
    store.write([to_stored(RawMessage(forward([exo_junk()]), "t"), ParseOptions(), now)])  # Exchange Online

    with store.transaction(rollback=True) as connection:  # the dry run
        plans, waiting = reporter.plan(connection)
        reporter.send(connection, plans)
    assert sorted(p.line() for p in plans) == [
        "arf to abuse@hoster.example: 2 reports (45.33.7.9)",
        "digest to abuse@example-hoster.example: 7 reports (45.33.8.1)",
        "microsoft to junk@office365.microsoft.com: 1 reports",
    ]
    assert waiting == ["1 source addresses without an abuse contact"]
    with store.connect() as connection:
        assert outbox.mails(connection) == []  # the dry run left nothing

    with store.transaction() as connection:
        plans, _ = reporter.plan(connection)
        assert reporter.send(connection, plans) == 4
    deliver(store, sink)
    arfs = sink.to("abuse@hoster.example")
    assert len(arfs) == 2
    for mail in arfs:
        (read,) = parse_message(mail.raw, received_at=now)  # our own parser reads what we send
        assert (read.format, read.feedback_type, read.source.ip) == ("arf", "abuse", "45.33.7.9")
        assert b"fbl0@isp0.example" not in mail.raw and b"fbl1@isp1.example" not in mail.raw
        assert b"victim@recipient.example" not in mail.raw and b"redacted@recipient.example" in mail.raw
    (summary,) = sink.to("abuse@example-hoster.example")
    attachment = next(part for part in summary.message.walk() if part.get_filename() == "abuse-reports.csv")
    rows = list(csv.DictReader(io.StringIO(attachment.get_content())))  # type: ignore[attr-defined]
    assert len(rows) == 7 and {row["source_ip"] for row in rows} == {"45.33.7.9"} - {"45.33.7.9"} | {
        "45.33.8.1"
    }
    assert b"user0@mail0.example" not in summary.raw
    (to_microsoft,) = sink.to("junk@office365.microsoft.com")
    parts = [part.get_content_type() for part in to_microsoft.message.walk()]
    assert parts == ["multipart/mixed", "message/rfc822", "text/plain"]  # the junk attached, nothing else
    assert b"cba1030d-af07-487f-8f7b-30d91dbfbfeb" in to_microsoft.raw

    with store.transaction() as connection:  # nothing new: nothing sent
        plans, _ = reporter.plan(connection)
        assert plans == []
    store.write([report("45.33.7.9", "late@isp9.example", now + timedelta(minutes=5))])
    with store.transaction() as connection:
        plans, waiting = reporter.plan(connection)
    assert plans == [] and any("abuse@hoster.example: notified" in line for line in waiting)
    later = replace(reporter, clock=lambda: now + timedelta(hours=25))
    with store.transaction() as connection:
        plans, _ = later.plan(connection)
        later.send(connection, plans)
    assert [p.line() for p in plans] == ["arf to abuse@hoster.example: 1 reports (45.33.7.9)"]


def test_opted_out_contacts_are_never_sent_to(world: tuple[ReportStore, OnwardReporter, SmtpSink]) -> None:
    store, reporter, _ = world
    store.write([report("45.33.8.1", "u@mail.example", datetime.now(UTC))])
    quiet = replace(reporter, policy=replace(reporter.policy, opt_out=frozenset({"example-hoster.example"})))
    with store.transaction() as connection:
        plans, waiting = quiet.plan(connection)
    assert plans == [] and waiting == ["abuse@example-hoster.example: opted out (1 reports not sent)"]


def test_the_command(tmp_path: Path) -> None:
    dns_server, rdap_server, sink = DnsServer(tmp_path), RdapStandIn(), SmtpSink().start()
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    env = {
        "ABUSEPIPE_DNS_SERVER": f"127.0.0.1:{dns_server.port}",
        "ABUSEPIPE_RDAP_URL": rdap_server.url,
        "ABUSEPIPE_MAIL_RELAY": sink.relay,
        "ABUSEPIPE_MAIL_FROM": DESK,
    }
    try:
        store = ReportStore.open(database)
        store.write([report("45.33.7.9", "fbl@isp.example", datetime.now(UTC))])
        store.close()
        dry = cli(database, "notify", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.strip() == "would send arf to abuse@hoster.example: 1 reports (45.33.7.9)"
        done = cli(database, "notify", "--once", env=env)
        assert done.returncode == 0, done.stderr
        assert "1 mails queued; 1 sent" in done.stderr
        assert len(sink.wait(1)) == 1
        sent = cli(database, "notify", "--sent", "--format", "json", env=env)
        (row,) = json.loads(sent.stdout)
        assert (row["contact"], row["kind"], row["reports"], row["mails"]) == (
            "abuse@hoster.example",
            "arf",
            1,
            1,
        )
        again = cli(database, "notify", "--once", env=env)
        assert again.returncode == 0 and again.stdout == "" and "0 mails queued" in again.stderr
    finally:
        sink.stop()
        dns_server.stop()
        rdap_server.stop()


def test_fraud_through_exchange_online_goes_to_microsofts_phish_address(
    world: tuple[ReportStore, OnwardReporter, SmtpSink],
) -> None:
    store, reporter, sink = world
    now = datetime.now(UTC)
    store.write([to_stored(RawMessage(forward([exo_junk()]), "t"), ParseOptions(feedback_type="fraud"), now)])
    with store.transaction() as connection:
        plans, _ = reporter.plan(connection)
        reporter.send(connection, plans)
    assert [p.line() for p in plans] == ["microsoft to phish@office365.microsoft.com: 1 reports"]
    deliver(store, sink)
    (mail,) = sink.to("phish@office365.microsoft.com")
    assert mail.message.get_body(("plain",)) is None  # nothing but the attached junk


def test_a_crash_mid_batch_sends_nothing_twice_and_a_relay_outage_only_delays(
    world: tuple[ReportStore, OnwardReporter, SmtpSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    from notify import onward

    store, reporter, sink = world
    now = datetime.now(UTC)
    store.write([report("45.33.7.9", "a@isp.example", now), report("45.33.8.1", "b@isp.example", now)])
    real_enqueue = onward.outbox.enqueue
    calls: list[int] = []

    def crash_on_second(*args: object, **kwargs: object) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the process died here")
        return real_enqueue(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(onward.outbox, "enqueue", crash_on_second)
    with pytest.raises(RuntimeError), store.transaction() as connection:
        plans, _ = reporter.plan(connection)
        reporter.send(connection, plans)
    with store.connect() as connection:
        assert outbox.mails(connection) == []  # the half-sent batch left nothing behind
    monkeypatch.setattr(onward.outbox, "enqueue", real_enqueue)
    with store.transaction() as connection:
        plans, _ = reporter.plan(connection)
        assert reporter.send(connection, plans) == 2

    sink.stop()  # the relay is down when the mails go out
    sender = OutboxSender(store, MailRelay.parse(sink.relay, sender=DESK), first_retry=0.01)
    assert sender.flush() == (0, 2)
    sink.start()
    time_limit = datetime.now(UTC) + timedelta(seconds=10)
    while len(sink.received) < 2:
        assert datetime.now(UTC) < time_limit, sink.received
        sender.flush()
    assert sorted(r for m in sink.received for r in m.recipients) == [
        "abuse@example-hoster.example",
        "abuse@hoster.example",
    ]
    sender.flush()
    assert len(sink.received) == 2  # each once
