"""Throughput and latency of the whole pipeline: intake -> Kafka -> consumer -> PostgreSQL.

    python benchmarks/pipeline.py [--kafka HOST:PORT] [--database URL] [--reports 20000]
                                  [--rate 1000] [--seconds 30]

Starts the broker (scripts/kafka) and PostgreSQL (scripts/postgres) itself unless given; every run
uses fresh topics, a fresh consumer group and a fresh database. The store consumer runs in this process
(as `abusepipe consume` does), publishing runs in another process, both at once:

1. sustained: `abusepipe ingest` (parsing included) publishes the corpus mix replicated to --reports
   reports as fast as it can while the consumer stores them; reports/s from the start of the ingest
   to the last report queryable.
2. latency: pre-parsed reports are published at --rate reports/s for --seconds; for each report, the
   time from its publication (the Kafka record timestamp) to the commit of the transaction that made it
   queryable: p50, p99, max.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka import KafkaAdminClient  # noqa: E402
from sqlalchemy import create_engine, make_url, text  # noqa: E402

from abusepipe.cycle_collector import collect_less_often  # noqa: E402
from benchmarks.oneline import run_main  # noqa: E402
from benchmarks.store import build_mbox  # noqa: E402
from ingest.runner import ParseOptions, to_stored  # noqa: E402
from ingest.sources import RawMessage  # noqa: E402
from sinks.consumed import Consumed, ConsumedResult  # noqa: E402
from sinks.consumer import ConsumerOptions, StoreConsumer  # noqa: E402
from sinks.kafka_config import KafkaSettings, TopicNames  # noqa: E402
from sinks.publisher import ReportPublisher  # noqa: E402
from sinks.store import ReportStore  # noqa: E402
from sinks.topics import create_topics  # noqa: E402
from sinks.wire import ReportIn  # noqa: E402


class Tally:
    """Reports committed by the consumer, with the latency of each (seconds)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reports = 0
        self.latencies: list[float] = []
        self.last_commit = 0.0

    def on_commit(self, batch: Sequence[Consumed], result: ConsumedResult, committed_at: float) -> None:
        with self.lock:
            self.reports += result.stored.reports
            self.last_commit = time.perf_counter()
            for item in batch:
                if isinstance(item.item, ReportIn) and item.timestamp > 0:
                    self.latencies.append(committed_at - item.timestamp / 1000)

    def wait_for(self, reports: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.reports >= reports:
                    return True
            time.sleep(0.05)
        return False


def fresh_kafka(bootstrap: str) -> KafkaSettings:
    name = f"bench{uuid.uuid4().hex[:8]}"
    topics = TopicNames(f"{name}.reports", f"{name}.evidence", f"{name}.deadletter")
    kafka = KafkaSettings(bootstrap=(bootstrap,), topics=topics, group=f"{name}.store")
    create_topics(kafka, partitions=6)
    return kafka


def fresh_database(url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_topics(bootstrap: str) -> Iterator[KafkaSettings]:
    """Topics of one run's own (`fresh_kafka`), deleted afterwards: the broker may be a desk's own."""
    kafka = fresh_kafka(bootstrap)
    try:
        yield kafka
    finally:
        admin = KafkaAdminClient(**kafka.client_options())
        try:
            admin.delete_topics(list(kafka.topics.all()))
        finally:
            admin.close()


@contextlib.contextmanager
def scratch_database(server: str) -> Iterator[str]:
    """A database of one run's own on `server` (`fresh_database`), dropped afterwards, connections and
    all: the PostgreSQL server may be a desk's own."""
    database = fresh_database(server)
    try:
        yield database
    finally:
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            name = make_url(database).database
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def scratch(bootstrap: str, database_root: str) -> Iterator[tuple[KafkaSettings, str]]:
    with scratch_topics(bootstrap) as kafka, scratch_database(database_root) as database:
        yield kafka, database


def start_consumer(
    kafka: KafkaSettings, database: str, tally: Tally
) -> tuple[StoreConsumer, threading.Event, threading.Thread]:
    store = ReportStore.open(database)
    consumer = StoreConsumer(kafka, store, ConsumerOptions(), on_commit=tally.on_commit)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    return consumer, stop, thread


def stop_consumer(consumer: StoreConsumer, stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(timeout=60)
    consumer.close()
    consumer.store.close()


def sustained(bootstrap: str, database_root: str, reports: int) -> None:
    with scratch(bootstrap, database_root) as (kafka, database), tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp) / "bench.mbox"
        messages, expected = build_mbox(reports, box)
        tally = Tally()
        consumer, stop, thread = start_consumer(kafka, database, tally)
        time.sleep(3)  # the group is formed and partitions assigned before the clock starts
        env = {**os.environ, **kafka.environment(), "PYTHONPATH": str(ROOT)}
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "abusepipe.cli", "ingest", "--quiet", str(box)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        published = time.perf_counter() - began
        if done.returncode != 0:
            sys.exit(f"ingest failed: {done.stderr.strip()}")
        complete = tally.wait_for(expected, timeout=600)
        elapsed = tally.last_commit - began
        stop_consumer(consumer, stop, thread)
    print(f"sustained: {messages} messages / {expected} reports (corpus mix), ingest with parsing")
    print(f"  ingest published everything in {published:.1f} s ({expected / published:.0f} reports/s)")
    state = "all stored" if complete else f"only {tally.reports} stored"
    rate = tally.reports / elapsed
    print(f"  {state} {elapsed:.1f} s after the ingest started: {rate:.0f} reports/s sustained")


def _publish_at_rate(
    kafka: KafkaSettings, messages: list[bytes], pace: tuple[int, float], ready: object, go: object
) -> None:
    rate, seconds = pace
    received = datetime.now(UTC)
    prepared = [
        to_stored(RawMessage(raw, f"bench:{i}"), ParseOptions(), received) for i, raw in enumerate(messages)
    ]
    publisher = ReportPublisher(kafka)
    ready.set()  # type: ignore[attr-defined]
    go.wait()  # type: ignore[attr-defined]
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    began = time.perf_counter()
    sent = 0
    while sent < len(prepared) and time.perf_counter() - began < seconds:
        due = began + (sent // per_tick) * tick
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        publisher.write(prepared[sent : sent + per_tick])
        sent += per_tick
    publisher.close()


def latency(bootstrap: str, database_root: str, rate: int, seconds: float) -> None:
    with scratch(bootstrap, database_root) as (kafka, database):
        _latency(kafka, database, rate, seconds)


def _latency(kafka: KafkaSettings, database: str, rate: int, seconds: float) -> None:
    from tests.mail import many_reports

    count = int(rate * seconds)
    messages = many_reports(count)
    context = multiprocessing.get_context("spawn")
    ready, go = context.Event(), context.Event()
    publisher = context.Process(target=_publish_at_rate, args=(kafka, messages, (rate, seconds), ready, go))
    publisher.start()
    tally = Tally()
    consumer, stop, thread = start_consumer(kafka, database, tally)
    ready.wait(timeout=300)
    time.sleep(3)
    began = time.perf_counter()
    go.set()
    publisher.join()
    complete = tally.wait_for(count, timeout=120)
    elapsed = tally.last_commit - began
    stop_consumer(consumer, stop, thread)
    values = sorted(tally.latencies)
    if not values:
        sys.exit("no report was committed")
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    state = "all stored" if complete else f"only {tally.reports} stored"
    print(f"latency: {count} reports published at {rate}/s for {seconds:g} s; {state} in {elapsed:.1f} s")
    print(
        f"  publish -> queryable: p50 {statistics.median(values) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms"
    )


def service(script: str) -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), "start"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"scripts/{script} start failed: {done.stderr.strip()}")
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kafka", help="bootstrap server (default: start scripts/kafka)")
    parser.add_argument(
        "--database", help="PostgreSQL URL to create databases on (default: scripts/postgres)"
    )
    parser.add_argument("--reports", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    collect_less_often()  # the consumer runs here: as in `abusepipe consume`
    bootstrap = args.kafka or service("kafka")
    database = args.database or service("postgres")
    shown = make_url(database).render_as_string()
    print(f"machine: {os.cpu_count()} cores; broker {bootstrap}; PostgreSQL {shown}")
    sustained(bootstrap, database, args.reports)
    latency(bootstrap, database, args.rate, args.seconds)


if __name__ == "__main__":
    run_main(main)
