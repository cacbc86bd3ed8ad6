"""Store what the Kafka consumer read together with its offsets, in the caller's one transaction.

The offsets row of each partition is locked first and records below the stored offset are skipped:
a consumer that lost its partitions while it was writing (a zombie) cannot count records twice, and
a replay after a crash writes only what the crashed transaction did not commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, tuple_

from sinks import models as m
from sinks.store import dead_row, greatest, insert_rows, raw_row, write_rows
from sinks.stored import NO_REPORT, BatchResult, PreparedReport, compress
from sinks.wire import ChunkIn, Decoded, Poison, ReportIn

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Consumed:
    topic: str
    partition: int
    offset: int
    item: Decoded
    value: bytes = b""
    """The record's value, kept to dead-letter it should the store refuse the decoded item."""
    timestamp: int = 0
    """The record's Kafka timestamp (ms): when it was published."""


@dataclass(slots=True)
class ConsumedResult:
    records: int = 0
    skipped: int = 0
    """Records below the stored offset: already stored by an earlier transaction."""
    stored: BatchResult = field(default_factory=BatchResult)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)


def stored_offsets(
    connection: Connection, group: str, partitions: Sequence[TopicPartition], *, lock: bool = False
) -> dict[TopicPartition, int]:
    """The next offset to read of each partition the group has stored anything from; with `lock`,
    their rows stay locked (in partition order) until the transaction ends."""
    if not partitions:
        return {}
    o = m.consumer_offsets
    query = (
        select(o.c.topic, o.c.partition, o.c.next_offset)
        .where(o.c.group_id == group, tuple_(o.c.topic, o.c.partition).in_(list(partitions)))
        .order_by(o.c.topic, o.c.partition)
    )
    if lock:
        query = query.with_for_update()
    return {(row.topic, row.partition): row.next_offset for row in connection.execute(query)}


def store_consumed(connection: Connection, group: str, batch: Sequence[Consumed]) -> ConsumedResult:
    result = ConsumedResult(records=len(batch))
    if not batch:
        return result
    partitions = sorted({(c.topic, c.partition) for c in batch})
    stored = stored_offsets(connection, group, partitions, lock=True)
    fresh = [c for c in batch if c.offset >= stored.get((c.topic, c.partition), -1)]
    result.skipped = len(batch) - len(fresh)

    reports: list[PreparedReport] = []
    raw_rows: list[dict[str, Any]] = []
    dead_rows: list[dict[str, Any]] = []
    staged: list[ChunkIn] = []
    for consumed in fresh:
        item = consumed.item
        if isinstance(item, ReportIn):
            reports.append(item.report)
        elif isinstance(item, Poison):
            dead_rows.append(_poison_row(item))
        elif item.count > 1:
            staged.append(item)
        elif item.stream == "evidence":
            raw_rows.append(raw_row(item.sha256, item.size, item.data, item.received_at))
        else:
            dead_rows.append(_dead_letter_row(item, item.data))
    for chunk, data in _assemble(connection, staged):
        if chunk.stream == "evidence":
            raw_rows.append(raw_row(chunk.sha256, chunk.size, data, chunk.received_at))
        else:
            dead_rows.append(_dead_letter_row(chunk, data))

    result.stored = write_rows(connection, raw_rows, reports, dead_rows)
    result.stored.messages = len(fresh)

    now = datetime.now(UTC)
    last: dict[TopicPartition, int] = {}
    for c in batch:
        last[(c.topic, c.partition)] = max(last.get((c.topic, c.partition), -1), c.offset)
    rows = []
    for (topic, partition), offset in sorted(last.items()):
        next_offset = max(offset + 1, stored.get((topic, partition), 0))
        result.next_offsets[(topic, partition)] = next_offset
        rows.append(
            {
                "group_id": group,
                "topic": topic,
                "partition": partition,
                "next_offset": next_offset,
                "updated_at": now,
            }
        )

    def upsert(stmt: Any) -> Any:
        table = m.consumer_offsets
        return stmt.on_conflict_do_update(
            index_elements=["group_id", "topic", "partition"],
            set_={
                "next_offset": greatest(connection, table.c.next_offset, stmt.excluded.next_offset),
                "updated_at": stmt.excluded.updated_at,
            },
        )

    insert_rows(connection, m.consumer_offsets, rows, conflict=upsert)
    return result


def _assemble(connection: Connection, chunks: list[ChunkIn]) -> list[tuple[ChunkIn, bytes]]:
    """Stage chunks of multi-chunk inputs; return the inputs whose last chunk has now arrived."""
    if not chunks:
        return []
    k = m.kafka_chunks
    rows = [
        {"stream": c.stream, "sha256": c.sha256, "chunk": c.index, "chunks": c.count, "data": c.data}
        for c in chunks
    ]
    insert_rows(
        connection,
        k,
        list({(r["stream"], r["sha256"], r["chunk"]): r for r in rows}.values()),
        conflict=lambda s: s.on_conflict_do_nothing(),
    )
    latest = {(c.stream, c.sha256): c for c in chunks}
    done: list[tuple[ChunkIn, bytes]] = []
    for (stream, sha), chunk in sorted(latest.items()):
        where = and_(k.c.stream == stream, k.c.sha256 == sha)
        have = connection.execute(select(func.count()).select_from(k).where(where)).scalar_one()
        if have < chunk.count:
            continue
        parts = connection.execute(select(k.c.data).where(where).order_by(k.c.chunk)).scalars().all()
        connection.execute(delete(k).where(where))
        done.append((chunk, b"".join(parts)))
    return done


def _dead_letter_row(chunk: ChunkIn, raw: bytes) -> dict[str, Any]:
    reason = chunk.reason or NO_REPORT
    sha = hashlib.sha256(raw).hexdigest()
    if sha != chunk.sha256:
        reason = f"{reason} (the bytes read from Kafka do not match their sha256 {chunk.sha256})"
    return dead_row(
        sha,
        reason=reason,
        source=chunk.source,
        received_at=chunk.received_at,
        size=chunk.size if chunk.size >= 0 else len(raw),
        compressed=compress(raw),
    )


def _poison_row(poison: Poison) -> dict[str, Any]:
    return dead_row(
        hashlib.sha256(poison.value).hexdigest(),
        reason=poison.reason,
        source=poison.where,
        received_at=poison.received_at,
        size=len(poison.value),
        compressed=compress(poison.value),
    )
