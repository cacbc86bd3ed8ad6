"""`abusepipe imap` against a real Dovecot (scripts/dovecot), over STARTTLS and implicit TLS."""

from __future__ import annotations

import io
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from imapclient import IMAPClient
from pydantic import SecretStr
from sqlalchemy import create_engine, func, select

from ingest.imap import ImapIntake, ImapOptions
from ingest.live import IntakeCounters, LiveIntake, MessageLog
from ingest.runner import ParseOptions
from sinks import models as m
from sinks.store import ReportStore
from tests.conftest import ROOT, ImapServer, OwnService
from tests.mail import forward, junk, many_reports

pytestmark = pytest.mark.integration

CMD = [sys.executable, "-m", "abusepipe.cli"]


class Mailbox:
    """The test's own folders on the shared Dovecot account."""

    def __init__(self, server: ImapServer) -> None:
        self.server = server
        prefix = f"t{uuid.uuid4().hex[:8]}"
        self.inbox, self.processed, self.rejected = (
            f"{prefix}/in",
            f"{prefix}/Processed",
            f"{prefix}/Rejected",
        )
        with self.client() as client:
            client.create_folder(self.inbox)

    def client(self) -> IMAPClient:
        context = ssl.create_default_context(cafile=self.server.ca_file)
        client = IMAPClient(self.server.host, self.server.port, ssl=False, timeout=30)
        client.starttls(context)
        client.login(self.server.user, self.server.password)
        return client

    def append(self, *messages: bytes, folder: str | None = None) -> None:
        with self.client() as client:
            for raw in messages:
                client.append(folder or self.inbox, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

    def count(self, folder: str) -> int:
        with self.client() as client:
            if not client.folder_exists(folder):
                return 0
            return int(client.select_folder(folder, readonly=True)[b"EXISTS"])

    def flags(self, folder: str) -> list[tuple[bytes, ...]]:
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            found = client.get_flags(client.search(["ALL"]))
            return [tuple(sorted(found[uid])) for uid in sorted(found)]

    def options(self, **overrides: object) -> ImapOptions:
        values: dict[str, object] = {
            "host": self.server.host,
            "port": self.server.port,
            "security": "starttls",
            "username": self.server.user,
            "password": SecretStr(self.server.password),
            "ca_file": self.server.ca_file,
            "folders": (self.inbox,),
            "processed_folder": self.processed,
            "rejected_folder": self.rejected,
        }
        values.update(overrides)
        return ImapOptions(**values)  # type: ignore[arg-type]

    def args(self, *extra: str) -> list[str]:
        return [
            "imap", "--host", self.server.host, "--port", str(self.server.port), "--security", "starttls",
            "--ca-file", self.server.ca_file, "--user", self.server.user, "--folder", self.inbox,
            "--processed-folder", self.processed, "--rejected-folder", self.rejected, *extra,
        ]  # fmt: skip


@pytest.fixture
def mailbox(imap_server: ImapServer) -> Mailbox:
    return Mailbox(imap_server)


def env(**extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")},
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def run(args: list[str], password: str, database: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CMD, *args, "--database", database],
        env=env(ABUSEPIPE_IMAP_PASSWORD=password),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def start_imap(mailbox: Mailbox, database: str, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """The long-running `abusepipe imap`, returned once it is reading the mailbox."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*CMD, *mailbox.args(*args), "--database", database],
            env=env(ABUSEPIPE_IMAP_PASSWORD=mailbox.server.password),
            stderr=log,
        )
    deadline = time.monotonic() + 60
    while "reading " not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            kill_if_running(process)
            pytest.fail(f"abusepipe imap did not start: {log_path.read_text()}")
        time.sleep(0.2)
    return process


def stop_gracefully(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def kill_if_running(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def counts(database: str) -> tuple[int, int, int]:
    engine = create_engine(database)
    with engine.connect() as connection:
        reports = connection.execute(select(func.count()).select_from(m.reports)).scalar_one()
        dead = connection.execute(select(func.count()).select_from(m.deadletters)).scalar_one()
        ip_total = connection.execute(
            select(func.coalesce(func.sum(m.offenders.c.reports), 0)).where(m.offenders.c.kind == "ip")
        ).scalar_one()
    engine.dispose()
    return int(reports), int(dead), int(ip_total)


def test_new_mail_is_processed_once_and_moved(mailbox: Mailbox, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    mailbox.append(*many_reports(3), b"Subject: hello\n\nnot a report\n")
    first = run(mailbox.args("--once"), mailbox.server.password, database)
    assert first.returncode == 0, first.stderr
    assert counts(database) == (3, 1, 3)
    assert (
        mailbox.count(mailbox.inbox),
        mailbox.count(mailbox.processed),
        mailbox.count(mailbox.rejected),
    ) == (0, 3, 1)
    assert (
        first.stderr.count('"outcome": "stored"') == 3
        and first.stderr.count('"outcome": "dead-lettered"') == 1
    )
    assert "done: 4 received, 3 reports, 0 rejected, 1 dead-lettered, 0 retried" in first.stderr
    assert all(b"\\Seen" not in flags for flags in mailbox.flags(mailbox.processed))  # read with PEEK
    again = run(mailbox.args("--once"), mailbox.server.password, database)
    assert again.returncode == 0 and "done: 0 received" in again.stderr
    assert counts(database) == (3, 1, 3)


def test_flag_mode_keeps_messages_in_place(mailbox: Mailbox, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    mailbox.append(*many_reports(2), b"Subject: hello\n\nnot a report\n")
    assert run(mailbox.args("--once", "--mark", "flag"), mailbox.server.password, database).returncode == 0
    assert mailbox.count(mailbox.inbox) == 3 and mailbox.count(mailbox.processed) == 0
    assert mailbox.flags(mailbox.inbox) == [
        (b"$AbusepipeDone",),
        (b"$AbusepipeDone",),
        (b"$AbusepipeDeadLetter", b"$AbusepipeDone"),
    ]
    mailbox.append(forward([junk(extra=[("X-N", "late")])]))
    later = run(mailbox.args("--once", "--mark", "flag"), mailbox.server.password, database)
    assert "done: 1 received, 1 reports" in later.stderr
    assert counts(database) == (3, 1, 3)


def intake_for(
    mailbox: Mailbox, store: ReportStore, **overrides: object
) -> tuple[ImapIntake, LiveIntake, io.StringIO]:
    live = LiveIntake(store)
    log = io.StringIO()
    reader = ImapIntake(
        mailbox.options(**overrides), live, ParseOptions(), IntakeCounters(), MessageLog("imap", log)
    )
    return reader, live, log


def test_a_crash_between_the_write_and_the_mark_loses_and_doubles_nothing(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    mailbox.append(*many_reports(5))
    store = ReportStore.open(database)
    try:
        crashing, live, _ = intake_for(mailbox, store)

        def die(*_: object) -> None:
            raise SystemExit("killed after the write, before the mark")

        crashing._mark = die  # type: ignore[method-assign]
        with pytest.raises(SystemExit):
            crashing.once()
        live.close()
        assert counts(database) == (5, 0, 5)  # durable
        assert mailbox.count(mailbox.inbox) == 5  # but not marked
        restarted, live, log = intake_for(mailbox, store)
        result = restarted.once()
        live.close()
    finally:
        store.close()
    assert result.processed == 5
    assert log.getvalue().count('"outcome": "stored"') == 5
    assert counts(database) == (5, 0, 5)  # written again: nothing doubled
    assert (mailbox.count(mailbox.inbox), mailbox.count(mailbox.processed)) == (0, 5)


def test_uidvalidity_change_is_read_afresh(mailbox: Mailbox, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    messages = many_reports(4)
    mailbox.append(*messages[:2])
    store = ReportStore.open(database)
    try:
        reader, live, log = intake_for(mailbox, store, mark="flag")
        client = reader.connect()
        assert reader.run_once(client).processed == 2
        with mailbox.client() as other:  # the server rebuilds the folder: new UIDVALIDITY, UIDs from 1
            other.delete_folder(mailbox.inbox)
            other.create_folder(mailbox.inbox)
        mailbox.append(*messages[1:])
        assert reader.run_once(client).processed == 3
        client.logout()
        live.close()
    finally:
        store.close()
    assert "UIDVALIDITY changed" in log.getvalue()
    assert counts(database) == (4, 0, 4)


def test_idle_picks_up_new_mail_and_sigterm_stops(mailbox: Mailbox, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    log_path = tmp_path / "imap.log"
    process = start_imap(mailbox, database, log_path, "--poll-interval", "600")
    try:
        time.sleep(1)  # in IDLE by now (the poll interval is 10 minutes: only IDLE can wake it)
        began = time.monotonic()
        mailbox.append(forward([junk()]))
        while mailbox.count(mailbox.processed) < 1:
            assert process.poll() is None and time.monotonic() - began < 30, log_path.read_text()
            time.sleep(0.2)
        assert time.monotonic() - began < 15
        stop_gracefully(process)
    finally:
        kill_if_running(process)
    assert counts(database) == (1, 0, 1)
    assert "stopped: 1 received, 1 reports" in log_path.read_text()


def test_implicit_tls_and_a_wrong_password(mailbox: Mailbox, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    mailbox.append(forward([junk()]))
    args = mailbox.args("--once")
    args[args.index("--port") + 1] = str(mailbox.server.tls_port)
    args[args.index("--security") + 1] = "ssl"
    done = run(args, mailbox.server.password, database)
    assert done.returncode == 0, done.stderr
    assert counts(database) == (1, 0, 1)
    wrong = run(args, "not-the-password", database)
    assert wrong.returncode == 75
    lines = wrong.stderr.strip().splitlines()
    assert lines[-1].startswith(
        f"abusepipe: error: IMAP login to {mailbox.server.host} as {mailbox.server.user} failed"
    )
    assert "Traceback" not in wrong.stderr


def test_many_messages_in_batches(mailbox: Mailbox, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    with mailbox.client() as client:
        for raw in many_reports(250):
            client.append(mailbox.inbox, raw.replace(b"\n", b"\r\n"))
    done = run(mailbox.args("--once"), mailbox.server.password, database)
    assert done.returncode == 0, done.stderr[-2000:]
    assert counts(database) == (250, 0, 250)
    assert mailbox.count(mailbox.processed) == 250


def test_nothing_is_marked_while_the_store_is_down(
    mailbox: Mailbox, own_postgres: tuple[str, OwnService], tmp_path: Path
) -> None:
    url, control = own_postgres
    log_path = tmp_path / "imap.log"
    process = start_imap(mailbox, url, log_path, "--poll-interval", "2", "--no-idle")
    try:
        deadline = time.monotonic() + 60
        control("stop")
        mailbox.append(*many_reports(3))
        while '"outcome": "retry"' not in log_path.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        time.sleep(2)
        assert (mailbox.count(mailbox.inbox), mailbox.count(mailbox.processed)) == (3, 0)  # kept for later
        control("resume")
        deadline = time.monotonic() + 90
        while mailbox.count(mailbox.processed) < 3:
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
        stop_gracefully(process)
    finally:
        kill_if_running(process)
    assert counts(url) == (3, 0, 3)
    assert mailbox.count(mailbox.inbox) == 0
    assert "Traceback" not in log_path.read_text()  # the pool's complaints are one line each


def test_imap_into_kafka_then_consumed_once(
    mailbox: Mailbox, kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    from sinks.kafka_config import KafkaSettings, TopicNames
    from sinks.topics import create_topics

    name = f"imap{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(
        (kafka_bootstrap,), TopicNames(f"{name}.r", f"{name}.e", f"{name}.d"), group=f"{name}.g"
    )
    create_topics(kafka, partitions=2)
    kafka_env = env(
        ABUSEPIPE_IMAP_PASSWORD=mailbox.server.password,
        ABUSEPIPE_DATABASE_URL=postgres_url,
        **kafka.environment(),
    )
    mailbox.append(*many_reports(20), b"Subject: hello\n\nnot a report\n")
    published = subprocess.run(
        [*CMD, *mailbox.args("--once")],
        env=kafka_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert published.returncode == 0, published.stderr
    assert "done: 21 received, 20 reports, 0 rejected, 1 dead-lettered" in published.stderr
    assert (mailbox.count(mailbox.processed), mailbox.count(mailbox.rejected)) == (20, 1)
    consumer = subprocess.Popen([*CMD, "consume"], env=kafka_env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if counts(postgres_url)[:2] == (20, 1):
                    break
            except Exception:  # tables not created yet
                pass
            assert consumer.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
        stop_gracefully(consumer)
    finally:
        kill_if_running(consumer)
    assert counts(postgres_url) == (20, 1, 20)


def test_a_message_over_the_size_limit_is_read_only_up_to_it(mailbox: Mailbox, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    huge = forward([junk()]) + b"x" * 100 + (b"y" * 76 + b"\n") * 2000  # ~150 KB
    mailbox.append(huge, many_reports(1)[0])
    done = subprocess.run(
        [*CMD, *mailbox.args("--once"), "--database", database],
        env=env(ABUSEPIPE_IMAP_PASSWORD=mailbox.server.password, ABUSEPIPE_MAX_MESSAGE_BYTES="20000"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (mailbox.count(mailbox.processed), mailbox.count(mailbox.rejected)) == (1, 1)
    engine = create_engine(database)
    with engine.connect() as connection:
        reason, size, data = connection.execute(
            select(m.deadletters.c.reason, m.deadletters.c.size, m.deadletters.c.data)
        ).one()
    engine.dispose()
    assert size > 150_000 and reason.startswith(f"message is {size} bytes, over the limit of 20000")
    from sinks.stored import decompress

    assert len(decompress(data)) == 20000
