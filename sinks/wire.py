"""The Kafka record format: what the publisher sends and how the consumer reads it back.

Three topics (`TopicNames`):

- reports: value = the report's JSON document (UTF-8), key = the offending source's aggregation key
  (`tenant:<guid>`, `ip:<addr>`, ...) so one source's reports stay ordered in one partition; headers
  `schema_version`, `input_sha256`, `source`.
- evidence: the original bytes of a reported input, zstd-compressed, cut into chunks under Kafka's
  default 1 MB record limit; key = their sha256 so every chunk lands in one partition, in order.
- deadletter: the raw bytes of an input that yielded no report, in chunks the same way, with `reason`,
  `source`, `received_at` and `size` in the headers of every chunk.

Every decoding problem is returned as a `Poison` carrying a clear reason, never raised: the consumer
dead-letters it and moves on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pydantic import ValidationError

from schemas import AbuseReport
from sinks.kafka_config import TopicNames
from sinks.stored import PreparedReport, StoredMessage

SCHEMA_VERSIONS = frozenset({1})
"""Report schema versions this consumer reads; other versions are dead-lettered."""
CHUNK_BYTES = 512 * 1024
"""Chunk size of evidence and dead-letter bytes: far below Kafka's default 1 MB message limit."""
KEY_PREFERENCE = ("tenant", "ip", "mail_from_domain", "from_domain", "dkim_domain", "url_domain")
MAX_HEADER_TEXT = 2000

H_SCHEMA = "schema_version"
H_SHA = "input_sha256"
H_SOURCE = "source"
H_RECEIVED = "received_at"
H_REASON = "reason"
H_SIZE = "size"
H_CHUNK = "chunk"
H_ENCODING = "content-encoding"
H_TYPE = "content-type"

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: bytes
    value: bytes
    headers: Headers


def aggregation_key(report: PreparedReport) -> str:
    """The most specific offender the report counts against: a tenant, else its IP, else a domain."""
    keys = dict(reversed(report.keys))  # the first key of each kind wins
    for kind in KEY_PREFERENCE:
        if kind in keys:
            return f"{kind}:{keys[kind]}"
    return f"report:{report.report_id}"


def _text(value: str) -> bytes:
    return value[:MAX_HEADER_TEXT].encode("utf-8", "replace")


def encode_message(
    item: StoredMessage, topics: TopicNames, *, chunk_bytes: int = CHUNK_BYTES
) -> list[OutgoingRecord]:
    """The records of one ingested message: its evidence then its reports, or its dead letter."""
    received = _text(item.received_at.astimezone(UTC).isoformat())
    sha = item.sha256
    if not item.prepared:
        meta: Headers = [
            (H_SHA, sha.encode()),
            (H_REASON, _text(item.reason)),
            (H_SOURCE, _text(item.source)),
            (H_RECEIVED, received),
            (H_SIZE, str(item.size).encode()),
        ]
        return _chunks(topics.deadletter, sha, item.raw, meta, chunk_bytes)
    meta = [
        (H_SHA, sha.encode()),
        (H_RECEIVED, received),
        (H_SIZE, str(len(item.raw)).encode()),
        (H_ENCODING, b"zstd"),
    ]
    records = _chunks(topics.evidence, sha, item.compressed, meta, chunk_bytes)
    source = _text(item.source)
    for report in item.prepared:
        headers: Headers = [
            (H_SCHEMA, str(report.schema_version).encode()),
            (H_SHA, sha.encode()),
            (H_SOURCE, source),
            (H_TYPE, b"application/json"),
        ]
        key = aggregation_key(report).encode("utf-8", "replace")
        records.append(OutgoingRecord(topics.reports, key, report.document.encode(), headers))
    return records


def _chunks(topic: str, sha: str, data: bytes, meta: Headers, chunk_bytes: int) -> list[OutgoingRecord]:
    count = max(1, -(-len(data) // chunk_bytes))
    return [
        OutgoingRecord(
            topic,
            sha.encode(),
            data[index * chunk_bytes : (index + 1) * chunk_bytes],
            [*meta, (H_CHUNK, f"{index}/{count}".encode())],
        )
        for index in range(count)
    ]


# --- reading ------------------------------------------------------------------------------------------


class ConsumedRecord(Protocol):
    """What the consumer needs of a kafka-python `ConsumerRecord`."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


@dataclass(frozen=True, slots=True)
class ReportIn:
    report: PreparedReport


@dataclass(frozen=True, slots=True)
class ChunkIn:
    stream: str
    """`evidence` or `deadletter`"""
    sha256: str
    index: int
    count: int
    data: bytes
    received_at: datetime
    size: int
    reason: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class Poison:
    """A record the consumer cannot use: dead-lettered in the store with `reason`."""

    reason: str
    value: bytes
    where: str
    received_at: datetime


Decoded = ReportIn | ChunkIn | Poison


class RecordPosition(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def where(record: RecordPosition) -> str:
    return f"kafka:{record.topic}/{record.partition}@{record.offset}"


def _record_time(record: ConsumedRecord) -> datetime:
    if record.timestamp and record.timestamp > 0:
        return datetime.fromtimestamp(record.timestamp / 1000, UTC)
    return datetime.now(UTC)


def decode(record: ConsumedRecord, topics: TopicNames) -> Decoded:
    value = record.value or b""
    headers = {name: (data or b"") for name, data in (record.headers or ())}
    if record.topic == topics.reports:
        return _decode_report(record, value, headers)
    if record.topic in (topics.evidence, topics.deadletter):
        stream = "evidence" if record.topic == topics.evidence else "deadletter"
        return _decode_chunk(record, stream, value, headers)
    return Poison(
        f"record from an unexpected topic {record.topic}", value, where(record), _record_time(record)
    )


def _decode_report(record: ConsumedRecord, value: bytes, headers: dict[str, bytes]) -> Decoded:
    moment = _record_time(record)
    try:
        report = AbuseReport.model_validate_json(value)
    except ValidationError as exc:
        return Poison(_report_problem(value, exc), value, where(record), moment)
    try:
        document = value.decode("utf-8")
    except UnicodeDecodeError:
        document = report.model_dump_json()
    return ReportIn(PreparedReport.of(report, report.received_at or moment, document=document))


def _report_problem(value: bytes, exc: ValidationError) -> str:
    try:
        data = json.loads(value)
    except (ValueError, RecursionError) as error:
        return f"invalid JSON in a report record: {' '.join(str(error).split())[:200]}"
    if not isinstance(data, dict):
        return f"a report record holds a JSON {type(data).__name__}, not an object"
    version = data.get("schema_version")
    if version not in SCHEMA_VERSIONS:
        known = ", ".join(str(v) for v in sorted(SCHEMA_VERSIONS))
        return f"unknown schema_version {version!r} (this consumer reads {known}): upgrade abusepipe"
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"invalid report (schema_version {version}): {location}: {first['msg']}"[:MAX_HEADER_TEXT]


def _decode_chunk(record: ConsumedRecord, stream: str, value: bytes, headers: dict[str, bytes]) -> Decoded:
    moment = _record_time(record)
    try:
        sha = headers[H_SHA].decode("ascii")
        index_text, count_text = headers[H_CHUNK].decode("ascii").split("/")
        index, count = int(index_text), int(count_text)
        size = int(headers.get(H_SIZE, b"-1"))
        received = datetime.fromisoformat(headers[H_RECEIVED].decode("ascii"))
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        missing = f"header {exc}" if isinstance(exc, KeyError) else str(exc)
        return Poison(f"malformed {stream} chunk: {missing}"[:MAX_HEADER_TEXT], value, where(record), moment)
    if len(sha) != 64 or not 0 <= index < count or count > 100_000:
        return Poison(f"malformed {stream} chunk: {sha[:80]} {index}/{count}", value, where(record), moment)
    reason = headers.get(H_REASON, b"").decode("utf-8", "replace")
    source = headers.get(H_SOURCE, b"").decode("utf-8", "replace")
    return ChunkIn(stream, sha, index, count, value, received, size, reason, source)
