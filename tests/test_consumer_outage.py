"""The consumer rides out a Kafka outage that kafka-python 3 reports by raising from `poll`.

kafka-python 3.0 lets a failed metadata refresh escape `KafkaConsumer.poll` while it looks for the
group coordinator (a `KafkaConnectionError`, retriable by its own classification); the consumer used
to die of it when the broker went away at the wrong moment. Which poll meets the error depends on the
IO thread's timing, so the real-broker test (tests/test_kafka.py) cannot force it; here a stand-in for
`KafkaConsumer` raises it on cue, and the store is real.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError

import sinks.consumer
from ingest.runner import ParseOptions, to_stored
from ingest.sources import RawMessage
from sinks.consumer import ConsumerOptions, StoreConsumer
from sinks.kafka_config import BrokerUnavailable, KafkaSettings, TopicNames
from sinks.store import ReportStore
from sinks.wire import encode_message
from tests.conftest import count_rows
from tests.mail import many_reports

TOPICS = TopicNames("t.reports", "t.evidence", "t.deadletter")
KAFKA = KafkaSettings(bootstrap=("127.0.0.1:9",), topics=TOPICS, group="t.store")


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class ScriptedConsumer:
    """What `StoreConsumer` uses of `KafkaConsumer`; each poll plays the next step of a script:
    an exception to raise, a list of records to return, or None for an empty poll."""

    script: ClassVar[list[Exception | list[Record] | None]] = []

    def __init__(self, **_: Any) -> None:
        self._steps = iter(type(self).script)
        self._listener: Any = None
        self._assigned: list[TopicPartition] = []
        self.polls = 0

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._assigned = [TopicPartition(topic, 0) for topic in topics]
        self._listener = listener

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        self.polls += 1
        if self.polls == 1:
            self._listener.on_partitions_assigned(self._assigned)
        step = next(self._steps, None)
        if isinstance(step, Exception):
            raise step
        if not step:
            time.sleep(min(timeout_ms, 20) / 1000)
            return {}
        by_partition: dict[TopicPartition, list[Record]] = {}
        for record in step:
            by_partition.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return by_partition

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, *_: TopicPartition) -> None: ...
    def resume(self, *_: TopicPartition) -> None: ...
    def seek(self, *_: Any) -> None: ...
    def seek_to_beginning(self, *_: TopicPartition) -> None: ...
    def commit_async(self, *_: Any) -> None: ...
    def close(self, autocommit: bool = True) -> None: ...


def published_records() -> list[Record]:
    """One ARF report as the publisher puts it on the topics: its evidence chunks, then the report."""
    raw = many_reports(1)[0]
    stored = to_stored(RawMessage(raw, "outage:0"), ParseOptions(), datetime(2026, 11, 30, tzinfo=UTC))
    offsets: dict[str, int] = {}
    records = []
    for outgoing in encode_message(stored, TOPICS):
        offset = offsets.get(outgoing.topic, 0)
        offsets[outgoing.topic] = offset + 1
        records.append(
            Record(
                outgoing.topic, 0, offset, 1_764_460_800_000, outgoing.key, outgoing.value, outgoing.headers
            )
        )
    return records


@pytest.fixture(autouse=True)
def scripted_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks.consumer, "KafkaConsumer", ScriptedConsumer)


def consume(
    store: ReportStore, url: str, script: list[Exception | list[Record] | None], until: int
) -> tuple[list[str], Any]:
    """Run a consumer over the script until `until` reports are stored (or 20 s); its log lines and
    what `run` raised, if anything."""
    ScriptedConsumer.script = script
    lines: list[str] = []
    options = ConsumerOptions(batch_records=100, max_wait=0.05, backoff_start=0.01, backoff_max=0.05)
    stop = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run(stop)
        except BaseException as exc:  # handed to the test thread
            raised.append(exc)

    consumer = StoreConsumer(KAFKA, store, options, log=lines.append)
    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while not raised and count_rows(url) < until and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    return lines, raised[0] if raised else None


def test_connection_errors_from_poll_are_waited_out_and_nothing_is_lost(
    store: ReportStore, database_url: str
) -> None:
    down = KafkaConnectionError("111 ECONNREFUSED")
    lines, raised = consume(store, database_url, [None, down, down, None, down, published_records()], until=1)
    assert raised is None, raised
    assert count_rows(database_url) == 1
    assert lines[0] == "Kafka unavailable: KafkaConnectionError: 111 ECONNREFUSED; waiting for it"
    # One line when the outage begins, one when records flow again; not one per failed poll.
    assert len(lines) == 2 and lines[1].startswith("reading from Kafka again after "), lines


def test_an_error_kafka_does_not_retry_ends_the_consumer_with_a_clear_error(
    store: ReportStore, database_url: str
) -> None:
    refused: KafkaError = TopicAuthorizationFailedError("t.reports")
    lines, raised = consume(store, database_url, [None, refused, published_records()], until=1)
    assert isinstance(raised, BrokerUnavailable)
    assert str(raised) == "Kafka failed: [Error 29] TopicAuthorizationFailedError: t.reports"
    assert isinstance(raised.__cause__, TopicAuthorizationFailedError)
    assert count_rows(database_url) == 0 and lines == []
