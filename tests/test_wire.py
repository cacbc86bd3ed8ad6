"""The Kafka record format and the consumer's transaction, without a broker (records built in memory).

The same records go through a real broker in `test_kafka.py`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from ingest.runner import ParseOptions, to_stored
from ingest.sources import RawMessage
from sinks import models as m
from sinks.consumed import Consumed, store_consumed, stored_offsets
from sinks.kafka_config import TopicNames
from sinks.queries import dead_letters, report_raw
from sinks.store import ReportStore
from sinks.stored import StoredMessage, decompress
from sinks.wire import (
    CHUNK_BYTES,
    ChunkIn,
    OutgoingRecord,
    Poison,
    ReportIn,
    aggregation_key,
    decode,
    encode_message,
)
from tests.mail import arf, junk

TOPICS = TopicNames("t.reports", "t.evidence", "t.dead")
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class Record:
    """What kafka-python's ConsumerRecord offers the consumer."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp: int = int(NOW.timestamp() * 1000)


def stored(raw: bytes, *, trap: bool = False) -> StoredMessage:
    return to_stored(RawMessage(raw, "test"), ParseOptions(trap=trap), NOW)


def as_records(outgoing: list[OutgoingRecord], start: int = 0) -> list[Record]:
    return [Record(r.topic, 0, start + i, r.value, list(r.headers)) for i, r in enumerate(outgoing)]


def consumed(records: list[Record]) -> list[Consumed]:
    return [Consumed(r.topic, r.partition, r.offset, decode(r, TOPICS), r.value or b"") for r in records]


def test_a_report_is_published_as_evidence_then_the_report_keyed_by_its_source() -> None:
    item = stored(arf("abuse", junk(), fields=[("Source-IP", "8.8.4.4")]))
    records = encode_message(item, TOPICS)
    assert [r.topic for r in records] == ["t.evidence", "t.reports"]
    evidence, report = records
    assert evidence.key == item.prepared[0].input_sha256.encode()
    assert decompress(evidence.value) == item.raw
    assert dict(evidence.headers)["chunk"] == b"0/1"
    assert report.key == b"ip:8.8.4.4"
    assert dict(report.headers)["schema_version"] == b"1"
    assert json.loads(report.value)["source"]["ip"] == "8.8.4.4"


def test_aggregation_key_prefers_the_tenant_then_the_ip_then_a_domain() -> None:
    item = stored(arf("abuse", junk(), fields=[("Source-IP", "8.8.4.4")]))
    report = item.prepared[0]
    assert aggregation_key(report) == "ip:8.8.4.4"
    with_tenant = replace(report, keys=(("ip", "8.8.4.4"), ("tenant", "abc")))
    assert aggregation_key(with_tenant) == "tenant:abc"
    assert aggregation_key(replace(report, keys=(("from_domain", "x.example"),))) == "from_domain:x.example"
    assert aggregation_key(replace(report, keys=())) == f"report:{report.report_id}"


def test_evidence_over_kafkas_1mb_limit_is_chunked_and_reassembled(store: ReportStore) -> None:
    noise = os.urandom(3 * 1024 * 1024)  # incompressible: the compressed evidence is as large
    raw = junk() + noise.hex().encode()
    item = stored(raw, trap=True)
    assert item.prepared, item.rejection
    records = encode_message(item, TOPICS)
    chunks = [r for r in records if r.topic == "t.evidence"]
    assert len(chunks) > 1
    assert all(len(r.value) <= CHUNK_BYTES for r in records)
    # The chunks arrive over two transactions: the input is kept whole only once all are in.
    batch = consumed(as_records(records))
    first, second = batch[:2], batch[2:]
    with store.engine.begin() as connection:
        store_consumed(connection, "g", first)
    with store.connect() as connection:
        assert connection.execute(select(func.count()).select_from(m.kafka_chunks)).scalar_one() == 2
    with store.engine.begin() as connection:
        result = store_consumed(connection, "g", second)
    assert result.stored.reports == 1
    with store.connect() as connection:
        assert report_raw(connection, item.prepared[0].report_id) == raw
        assert connection.execute(select(func.count()).select_from(m.kafka_chunks)).scalar_one() == 0


def test_a_large_dead_letter_keeps_its_raw_bytes_and_reason(store: ReportStore) -> None:
    raw = b"Subject: hello\r\n\r\n" + os.urandom(1536 * 1024).hex().encode()
    item = stored(raw)
    assert item.rejection
    records = encode_message(item, TOPICS)
    assert len(records) > 2 and {r.topic for r in records} == {"t.dead"}
    with store.engine.begin() as connection:
        result = store_consumed(connection, "g", consumed(as_records(records)))
    assert result.stored.dead_lettered == 1
    with store.connect() as connection:
        (letter,) = dead_letters(connection)
        data = connection.execute(select(m.deadletters.c.data)).scalar_one()
    assert letter.reason == item.rejection
    assert letter.source == "test"
    assert decompress(data) == raw


def test_a_replayed_batch_is_skipped_by_its_stored_offsets(store: ReportStore) -> None:
    items = [stored(arf("abuse", junk(), fields=[("Source-IP", f"8.8.4.{i}")])) for i in range(1, 6)]
    records = as_records([r for item in items for r in encode_message(item, TOPICS)])
    with store.engine.begin() as connection:
        first = store_consumed(connection, "g", consumed(records[:6]))
    with store.engine.begin() as connection:
        replay = store_consumed(connection, "g", consumed(records))  # a crash replays from offset 0
    assert first.stored.reports == 3
    assert replay.skipped == 6
    assert replay.stored.reports == 2
    assert replay.stored.duplicates == 0
    with store.connect() as connection:
        assert stored_offsets(connection, "g", [("t.reports", 0), ("t.evidence", 0)]) == {
            ("t.reports", 0): 10,
            ("t.evidence", 0): 9,
        }
        assert stored_offsets(connection, "other", [("t.reports", 0)]) == {}
        ips = connection.execute(select(func.sum(m.offenders.c.reports)).where(m.offenders.c.kind == "ip"))
        assert ips.scalar_one() == 5


def poison_reasons(records: list[Record]) -> list[str]:
    return [item.reason for item in (decode(r, TOPICS) for r in records) if isinstance(item, Poison)]


def test_poison_records_get_a_clear_reason() -> None:
    good = json.loads(encode_message(stored(arf("abuse", junk())), TOPICS)[-1].value)
    v2 = json.dumps({**good, "schema_version": 2}).encode()
    broken = json.dumps({**good, "source": "not an object"}).encode()
    reasons = poison_reasons(
        [
            Record("t.reports", 0, 0, b"{not json"),
            Record("t.reports", 0, 1, v2),
            Record("t.reports", 0, 2, b"[1, 2]"),
            Record("t.reports", 0, 3, broken),
            Record("t.reports", 0, 4, None),
            Record("t.evidence", 0, 5, b"x", [("chunk", b"0/1")]),
            Record(
                "t.dead",
                0,
                6,
                b"x",
                [("input_sha256", b"0" * 64), ("chunk", b"3/2"), ("received_at", b"2026-01-01")],
            ),
            Record("elsewhere", 0, 7, b"x"),
        ]
    )
    assert reasons[0].startswith("invalid JSON in a report record")
    assert reasons[1] == "unknown schema_version 2 (this consumer reads 1): upgrade abusepipe"
    assert reasons[2] == "a report record holds a JSON list, not an object"
    assert reasons[3].startswith("invalid report (schema_version 1): source:")
    assert reasons[4].startswith("invalid JSON")
    assert reasons[5] == "malformed evidence chunk: header 'input_sha256'"
    assert reasons[6].startswith("malformed deadletter chunk:")
    assert reasons[7] == "record from an unexpected topic elsewhere"


def test_poison_is_dead_lettered_and_the_partition_moves_on(store: ReportStore) -> None:
    item = stored(arf("abuse", junk(), fields=[("Source-IP", "8.8.4.4")]))
    records = as_records(encode_message(item, TOPICS))
    records.insert(1, Record("t.reports", 0, 99, b'{"schema_version": 7}'))
    records[-1].offset = 100
    batch = consumed(records)
    assert isinstance(batch[0].item, ChunkIn) and isinstance(batch[2].item, ReportIn)
    with store.engine.begin() as connection:
        result = store_consumed(connection, "g", batch)
    assert (result.stored.reports, result.stored.dead_lettered) == (1, 1)
    assert result.next_offsets[("t.reports", 0)] == 101
    with store.connect() as connection:
        (letter,) = dead_letters(connection)
    assert letter.source == "kafka:t.reports/0@99"
    assert "unknown schema_version 7" in letter.reason


def test_kafka_record_batches_are_checksummed_in_c() -> None:
    import kafka.record.default_records as records
    from kafka.record._crc32c import crc as pure_python_crc

    from sinks import kafka_crc

    check = memoryview(b"123456789")
    assert records.calc_crc32c is kafka_crc.crc32c
    assert records.calc_crc32c(check) == pure_python_crc(check) == 0xE3069283  # CRC-32C check value
    batch = os.urandom(100_000)
    assert kafka_crc.crc32c(memoryview(batch)) == pure_python_crc(batch)


def test_kafka_settings_cross_to_another_process_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from abusepipe.settings import Settings
    from sinks.kafka_config import KafkaSettings

    kafka = KafkaSettings(
        ("a:1", "b:2"), TOPICS, group="g", client_id="c", session_timeout_ms=7000, delivery_timeout=5
    )
    for name, value in kafka.environment().items():
        monkeypatch.setenv(name, value)
    assert Settings().kafka() == kafka
