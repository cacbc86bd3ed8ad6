"""The Kafka backbone end to end, on a real Apache Kafka broker and a real PostgreSQL.

`abusepipe ingest` publishes, `abusepipe consume` processes store; faults are real: SIGKILL, the broker
and PostgreSQL stopped and started again. Every test has its own topics, consumer group and database,
and ends with exact counts: every report stored once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from ingest.runner import ParseOptions, to_stored
from ingest.sources import RawMessage
from sinks import models as m
from sinks.kafka_config import KafkaSettings, TopicNames
from sinks.offenders import KINDS
from sinks.publisher import ReportPublisher
from sinks.queries import top_offenders
from sinks.store import ReportStore
from sinks.stored import StoredMessage
from sinks.topics import create_topics
from tests.conftest import CORPUS, ROOT, SAMPLES, OwnService, count_rows
from tests.mail import junk, many_reports

pytestmark = pytest.mark.integration

CMD = [sys.executable, "-m", "abusepipe.cli"]
FAULT_REPORTS = 5000


def mbox(messages: list[bytes]) -> bytes:
    out = []
    for data in messages:
        body = b"\n".join(b">" + line if line.startswith(b"From ") else line for line in data.split(b"\n"))
        out.append(b"From fbl@isp.example Mon Jun  1 10:00:00 2026\n" + body.rstrip(b"\n") + b"\n\n")
    return b"".join(out)


@pytest.fixture(scope="session")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("many") / "reports.mbox"
    path.write_bytes(mbox(many_reports(FAULT_REPORTS)))
    return path


@dataclass
class Pipeline:
    kafka: KafkaSettings
    database_url: str
    tmp: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            **self.kafka.environment(),  # its session timeout is 6 s: killed consumers are noticed fast
            "ABUSEPIPE_DATABASE_URL": self.database_url,
            "ABUSEPIPE_DATA_DIR": str(self.tmp),
            "PYTHONPATH": str(ROOT),
            **extra,
        }

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*CMD, *args], capture_output=True, timeout=300, check=False, env=env or self.env(), cwd=self.tmp
        )

    def ingest(self, *paths: Path | str) -> str:
        done = self.run("ingest", *map(str, paths))
        assert done.returncode == 0, done.stderr.decode()
        return done.stderr.decode()

    def consumer(self, name: str = "consumer", *args: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        process = subprocess.Popen([*CMD, "consume", *args], stderr=log, env=self.env(), cwd=self.tmp)
        self.processes.append(process)
        return process

    def log(self, name: str = "consumer") -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def count(self, table: object = m.reports) -> int:
        try:
            return count_rows(self.database_url, table)
        except SQLAlchemyError:
            return -1  # not there yet, or the database is down for the test

    def wait_for(
        self, reports: int, *, timeout: float = 180, alive: list[subprocess.Popen[bytes]] = ()
    ) -> None:  # type: ignore[assignment]
        deadline = time.monotonic() + timeout
        while (have := self.count()) < reports:
            for process in alive:
                assert process.poll() is None, f"a consumer exited ({process.returncode}): {self.log()}"
            assert time.monotonic() < deadline, f"{have} of {reports} reports stored after {timeout}s"
            time.sleep(0.3)

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=60)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def unique_kafka(bootstrap: str) -> KafkaSettings:
    name = f"t{uuid.uuid4().hex[:10]}"
    topics = TopicNames(f"{name}.reports", f"{name}.evidence", f"{name}.deadletter")
    return KafkaSettings(
        bootstrap=(bootstrap,), topics=topics, group=f"{name}.store", session_timeout_ms=6000
    )


def make_pipeline(bootstrap: str, database_url: str, tmp: Path) -> Pipeline:
    kafka = unique_kafka(bootstrap)
    outcomes = create_topics(kafka, partitions=4)
    assert [o.created for o in outcomes] == [True, True, True]
    return Pipeline(kafka, database_url, tmp)


@pytest.fixture
def pipeline(kafka_bootstrap: str, postgres_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    made = make_pipeline(kafka_bootstrap, postgres_url, tmp_path)
    try:
        yield made
    finally:
        made.close()


def exact_counts(url: str) -> dict[str, int]:
    """What every fault test checks: each report stored once and counted once in every aggregate."""
    engine = create_engine(url)
    with engine.connect() as connection:
        counts = {
            "reports": connection.execute(select(func.count()).select_from(m.reports)).scalar_one(),
            "distinct_ids": connection.execute(
                select(func.count(func.distinct(m.reports.c.report_id)))
            ).scalar_one(),
            "raw": connection.execute(select(func.count()).select_from(m.raw_messages)).scalar_one(),
            "ip_links": connection.execute(
                select(func.count()).select_from(m.report_offenders).where(m.report_offenders.c.kind == "ip")
            ).scalar_one(),
            "ip_total": connection.execute(
                select(func.sum(m.offenders.c.reports)).where(m.offenders.c.kind == "ip")
            ).scalar_one(),
            "ip_hours": connection.execute(
                select(func.sum(m.offender_hours.c.reports)).where(m.offender_hours.c.kind == "ip")
            ).scalar_one(),
            "ips": connection.execute(
                select(func.count()).select_from(m.offenders).where(m.offenders.c.kind == "ip")
            ).scalar_one(),
            "reporters": connection.execute(select(func.sum(m.offenders.c.reporters))).scalar_one(),
            "chunks_left": connection.execute(select(func.count()).select_from(m.kafka_chunks)).scalar_one(),
        }
    engine.dispose()
    return {name: int(value or 0) for name, value in counts.items()}


@pytest.fixture(scope="session")
def expected(many: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """The embedded path (no Kafka) on the same 5,000 reports gives the reference counts."""
    url = f"sqlite:///{tmp_path_factory.mktemp('embedded') / 'store.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_KAFKA")}
    done = subprocess.run(
        [*CMD, "ingest", "--quiet", "--database", url, str(many)],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    counts = exact_counts(url)
    n = FAULT_REPORTS
    fixed = {
        "reports": n,
        "distinct_ids": n,
        "raw": n,
        "ip_links": n,
        "ip_total": n,
        "ip_hours": n,
        "ips": 1000,
    }
    assert {name: counts[name] for name in fixed} == fixed
    assert counts["chunks_left"] == 0 and counts["reporters"] > 1000
    return counts


# --- end to end ---------------------------------------------------------------------------------------


def offenders_of(url: str) -> dict[str, list[tuple[str, int, int, int]]]:
    store = ReportStore.open(url)
    try:
        with store.connect() as connection:
            now = datetime.now(UTC)
            return {
                kind: [
                    (row.key, row.reports, row.reporters, row.all_reports)
                    for row in top_offenders(connection, kind, now=now, since=None, top=10_000)
                ]
                for kind in KINDS
            }
    finally:
        store.close()


def test_end_to_end_gives_the_same_answer_as_the_embedded_path(
    pipeline: Pipeline, postgres_url: str, tmp_path: Path
) -> None:
    inputs = [SAMPLES, CORPUS] if CORPUS.is_dir() else [SAMPLES]
    embedded_url = f"sqlite:///{tmp_path / 'embedded.sqlite3'}"
    env = {k: v for k, v in pipeline.env().items() if not k.startswith("ABUSEPIPE_KAFKA")}
    done = pipeline.run("ingest", "--database", embedded_url, *map(str, inputs), env=env)
    assert done.returncode == 0, done.stderr.decode()
    match = re.search(r"(\d+) reports stored, (\d+) duplicates, (\d+) dead-lettered", done.stderr.decode())
    assert match, done.stderr.decode()
    reports = int(match[1])
    assert reports > 20

    published = pipeline.ingest(*inputs)
    assert f"{int(match[1]) + int(match[2])} reports published" in published
    consumer = pipeline.consumer()
    pipeline.wait_for(reports, alive=[consumer])
    store = ReportStore.open(embedded_url)
    with store.connect() as connection:
        dead = connection.execute(select(func.count()).select_from(m.deadletters)).scalar_one()
    store.close()
    deadline = time.monotonic() + 60
    while pipeline.count(m.deadletters) < dead and time.monotonic() < deadline:
        time.sleep(0.3)
    assert pipeline.stop(consumer) == 0
    assert f"{reports} reports stored" in pipeline.log()

    through_kafka, embedded = offenders_of(pipeline.database_url), offenders_of(embedded_url)
    assert through_kafka == embedded
    # Not a trivially empty comparison: the samples alone give 46 offender keys, with the corpus over 50.
    assert sum(len(rows) for rows in embedded.values()) > (50 if CORPUS.is_dir() else 40)
    assert pipeline.count(m.deadletters) == dead
    assert documents_of(pipeline.database_url) == documents_of(embedded_url)


def documents_of(url: str) -> dict[str, dict[str, object]]:
    """Stored report documents, without the one field that differs between two runs: received_at."""
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(select(m.reports.c.report_id, m.reports.c.document)).all()
    engine.dispose()
    documents = {report_id: json.loads(document) for report_id, document in rows}
    for document in documents.values():
        assert document.pop("received_at")
    return documents


def test_evidence_and_dead_letters_over_1mb_survive_the_broker(pipeline: Pipeline, tmp_path: Path) -> None:
    big = junk() + os.urandom(3 * 1024 * 1024).hex().encode()  # ~3 MB compressed
    not_a_report = b"Subject: hello\r\n\r\n" + os.urandom(1024 * 1024).hex().encode()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.eml").write_bytes(big)
    (tmp_path / "in" / "hello.eml").write_bytes(not_a_report)
    done = pipeline.run("ingest", "--trap", str(tmp_path / "in"))
    assert done.returncode == 0, done.stderr.decode()
    consumer = pipeline.consumer()
    pipeline.wait_for(2, alive=[consumer])  # the big one, and hello.eml as trap junk too
    # Evidence has a topic of its own: it may land a moment after the reports that refer to it.
    deadline = time.monotonic() + 60
    while pipeline.count(m.raw_messages) < 2:
        assert time.monotonic() < deadline and consumer.poll() is None, pipeline.log()
        time.sleep(0.3)
    assert pipeline.stop(consumer) == 0
    engine = create_engine(pipeline.database_url)
    with engine.connect() as connection:
        report_ids = connection.execute(select(m.reports.c.report_id, m.reports.c.input_sha256)).all()
    engine.dispose()
    raws = {pipeline.run("report", "--raw", rid).stdout for rid, _ in report_ids}
    assert raws == {big, not_a_report}


def test_a_dead_letter_over_1mb_keeps_its_bytes(pipeline: Pipeline, tmp_path: Path) -> None:
    not_a_report = b"Subject: hello\r\n\r\n" + os.urandom(1024 * 1024).hex().encode()
    (tmp_path / "hello.eml").write_bytes(not_a_report)
    pipeline.ingest(tmp_path / "hello.eml")
    consumer = pipeline.consumer()
    deadline = time.monotonic() + 60
    while pipeline.count(m.deadletters) < 1:
        assert time.monotonic() < deadline and consumer.poll() is None, pipeline.log()
        time.sleep(0.3)
    assert pipeline.stop(consumer) == 0
    listed = pipeline.run("deadletter", "list", "--format", "json")
    assert b"not an abuse report" in listed.stdout
    letter_id = re.search(rb'"id": (\d+)', listed.stdout)
    assert letter_id
    assert pipeline.run("deadletter", "show", "--raw", letter_id[1].decode()).stdout == not_a_report


# --- faults, each with 5,000 reports in flight --------------------------------------------------------


def test_consumers_killed_mid_batch_lose_and_double_count_nothing(
    pipeline: Pipeline, many: Path, expected: dict[str, int]
) -> None:
    pipeline.ingest(many)
    first, second = pipeline.consumer("a", "--batch", "200"), pipeline.consumer("b", "--batch", "200")
    pipeline.wait_for(1500, alive=[first, second])
    first.kill()  # SIGKILL: no chance to finish its transaction
    pipeline.wait_for(3000, alive=[second])
    second.kill()
    assert first.wait() == -signal.SIGKILL and second.wait() == -signal.SIGKILL
    third = pipeline.consumer("c", "--batch", "200")
    pipeline.wait_for(FAULT_REPORTS, alive=[third])
    time.sleep(2)  # anything double-counted would show up now
    assert pipeline.stop(third) == 0
    assert exact_counts(pipeline.database_url) == expected


def test_two_consumers_share_the_partitions_and_poison_is_dead_lettered(
    pipeline: Pipeline, many: Path, expected: dict[str, int]
) -> None:
    topics = pipeline.kafka.topics
    producer = KafkaProducer(bootstrap_servers=list(pipeline.kafka.bootstrap), acks="all")
    poison = [
        (topics.reports, b"{not json at all"),
        (topics.reports, b'{"schema_version": 2, "report_id": "from-the-future"}'),
        (topics.reports, b"[1, 2, 3]"),
        (topics.evidence, b"a chunk without its headers"),
    ]
    for topic, value in poison:
        producer.send(topic, value=value, key=b"poison")
    producer.flush()
    pipeline.ingest(many)
    for topic, value in poison:
        producer.send(topic, value=value + b" ", key=b"poison")  # poison after the reports too
    producer.close()
    first, second = pipeline.consumer("a", "--stats-interval", "0.5"), pipeline.consumer("b")
    pipeline.wait_for(FAULT_REPORTS, alive=[first, second])
    deadline = time.monotonic() + 60
    while pipeline.count(m.deadletters) < 2 * len(poison):
        assert time.monotonic() < deadline, pipeline.count(m.deadletters)
        time.sleep(0.3)
    assert pipeline.stop(first) == 0 and pipeline.stop(second) == 0
    # The last line of each log is its summary (a's has progress lines before it).
    stored = [
        re.match(r"abusepipe: (\d+) records: (\d+) reports stored", pipeline.log(name).splitlines()[-1])
        for name in ("a", "b")
    ]
    assert all(stored), (pipeline.log("a"), pipeline.log("b"))
    assert "abusepipe: so far: " in pipeline.log("a") and "so far" not in pipeline.log("b")
    per_consumer = [int(match[2]) for match in stored if match]
    assert sum(per_consumer) == FAULT_REPORTS and min(per_consumer) > 0  # both had partitions
    assert exact_counts(pipeline.database_url) == expected
    listed = pipeline.run("deadletter", "list", "--format", "csv", "--limit", "20").stdout.decode()
    assert listed.count("invalid JSON in a report record") == 2
    assert listed.count("unknown schema_version 2 (this consumer reads 1)") == 2
    assert listed.count("a report record holds a JSON list") == 2
    assert listed.count("malformed evidence chunk") == 2


@pytest.fixture(scope="session")
def parsed_many(many: Path) -> list[StoredMessage]:
    messages = many_reports(FAULT_REPORTS)
    received = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    return [
        to_stored(RawMessage(raw, f"many:{i}"), ParseOptions(), received) for i, raw in enumerate(messages)
    ]


def test_broker_restart_during_publishing_and_consuming(
    own_broker: OwnService,
    postgres_url: str,
    tmp_path: Path,
    parsed_many: list[StoredMessage],
    expected: dict[str, int],
) -> None:
    bootstrap: str = own_broker.address
    pipeline = make_pipeline(bootstrap, postgres_url, tmp_path)
    try:
        publisher = ReportPublisher(pipeline.kafka)
        batches = [parsed_many[i : i + 250] for i in range(0, FAULT_REPORTS, 250)]
        for batch in batches[:8]:
            publisher.write(batch)
        consumer = pipeline.consumer()
        pipeline.wait_for(500, alive=[consumer])
        own_broker("stop")
        acknowledged = threading.Event()
        failures: list[BaseException] = []

        def publish_rest() -> None:
            try:
                for batch in batches[8:]:
                    publisher.write(batch)  # blocks, retrying, while the broker is down
            except BaseException as exc:  # shown by this test, not as a stray thread warning later
                failures.append(exc)
                return
            acknowledged.set()

        # A daemon: when the test fails early, the thread must not keep the run waiting on its producer.
        thread = threading.Thread(target=publish_rest, name="publish-rest", daemon=True)
        thread.start()
        time.sleep(4)
        assert not acknowledged.is_set()  # nothing counts as published while the broker is down
        assert consumer.poll() is None, pipeline.log()
        own_broker("resume")
        thread.join(timeout=180)
        assert not failures, failures
        assert acknowledged.is_set()
        publisher.close()
        pipeline.wait_for(FAULT_REPORTS, alive=[consumer])
        time.sleep(2)
        assert pipeline.stop(consumer) == 0
        assert "Traceback" not in pipeline.log() and "internal error" not in pipeline.log()
        assert exact_counts(pipeline.database_url) == expected
    finally:
        pipeline.close()


def test_postgres_restart_during_consuming(
    kafka_bootstrap: str,
    own_postgres: tuple[str, OwnService],
    tmp_path: Path,
    many: Path,
    expected: dict[str, int],
) -> None:
    url, control = own_postgres
    pipeline = make_pipeline(kafka_bootstrap, url, tmp_path)
    try:
        pipeline.ingest(many)
        consumer = pipeline.consumer("consumer", "--batch", "250")
        pipeline.wait_for(1000, alive=[consumer])
        control("stop")
        time.sleep(6)
        assert consumer.poll() is None, pipeline.log()  # waiting, not dead
        control("resume")
        pipeline.wait_for(FAULT_REPORTS, alive=[consumer])
        time.sleep(2)
        assert pipeline.stop(consumer) == 0
        assert "store unavailable" in pipeline.log()
        assert "Traceback" not in pipeline.log()
        assert exact_counts(url) == expected
    finally:
        pipeline.close()


def test_unconfigured_or_unreachable_kafka_gets_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
    done = subprocess.run(
        [*CMD, "consume"], env=env, capture_output=True, timeout=60, check=False, cwd=tmp_path
    )
    assert done.returncode == 2
    assert (
        done.stderr.decode().strip()
        == "abusepipe: error: consume needs Kafka: set ABUSEPIPE_KAFKA_BOOTSTRAP (host:port)"
    )
    env["ABUSEPIPE_KAFKA_BOOTSTRAP"] = "127.0.0.1:9"  # nothing listens there
    env["ABUSEPIPE_DATA_DIR"] = str(tmp_path)
    (tmp_path / "m.eml").write_bytes(junk())
    checkpoint = tmp_path / "done.jsonl"
    done = subprocess.run(
        [*CMD, "ingest", "--trap", "--checkpoint", str(checkpoint), str(tmp_path / "m.eml")],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 75
    assert not checkpoint.exists() or checkpoint.read_text() == ""  # nothing acknowledged
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("abusepipe: error: cannot reach Kafka at 127.0.0.1:9"), (
        lines
    )


def test_publishing_to_missing_topics_says_how_to_create_them(kafka_bootstrap: str, tmp_path: Path) -> None:
    kafka = unique_kafka(kafka_bootstrap)
    env = {
        **os.environ,
        "ABUSEPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "ABUSEPIPE_KAFKA_TOPIC_REPORTS": kafka.topics.reports,
        "ABUSEPIPE_DATA_DIR": str(tmp_path),
    }
    (tmp_path / "m.eml").write_bytes(junk())
    done = subprocess.run(
        [*CMD, "ingest", "--trap", str(tmp_path / "m.eml")],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 75
    assert done.stderr.decode().startswith(
        f"abusepipe: error: topics {kafka.topics.reports}, abuse.evidence.v1, abuse.deadletter.v1 are not on "
        f"the Kafka cluster at {kafka_bootstrap}: create with `abusepipe topics create`"
    )


def test_topics_create_is_idempotent(kafka_bootstrap: str) -> None:
    kafka = unique_kafka(kafka_bootstrap)
    assert [asdict(o)["created"] for o in create_topics(kafka, partitions=2)] == [True, True, True]
    again = create_topics(kafka, partitions=2)
    assert [o.detail for o in again] == ["exists (left unchanged)"] * 3


def test_a_piped_message_exits_0_once_the_broker_has_it(pipeline: Pipeline) -> None:
    raw = junk(extra=[("X-Piped", "yes")])
    piped = subprocess.run(
        [*CMD, "ingest", "--trap", "-"],
        input=raw,
        env=pipeline.env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr.decode()
    assert "1 messages: 1 reports published" in piped.stderr.decode()
    consumer = pipeline.consumer()
    pipeline.wait_for(1, alive=[consumer])
    assert pipeline.stop(consumer) == 0
