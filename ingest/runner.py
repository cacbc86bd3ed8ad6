"""The ingest loop: read raw messages, parse them, and store them in batches.

A batch is acknowledged (counted, reported done) only once its transaction committed. A store failure
stops the run with `StoreUnavailable`: the caller exits with EX_TEMPFAIL so that an MTA retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from abusepipe.errors import ReportRejected
from ingest.sources import RawMessage, SourceError
from parsers import ParseLimits, TrustPolicy, parse_message
from sinks.store import BatchResult, ReportStore, StoredMessage

DEFAULT_BATCH = 500


@dataclass(frozen=True, slots=True)
class ParseOptions:
    trap: bool = False
    trust: TrustPolicy = field(default_factory=TrustPolicy)
    limits: ParseLimits = field(default_factory=ParseLimits)


@dataclass(slots=True)
class IngestSummary:
    messages: int = 0
    reports: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    unreadable: list[SourceError] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: BatchResult) -> None:
        self.messages += result.messages
        self.reports += result.reports
        self.duplicates += result.duplicates
        self.dead_lettered += result.dead_lettered

    def line(self) -> str:
        rate = self.messages / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.messages} messages: {self.reports} reports stored, {self.duplicates} duplicates, "
            f"{self.dead_lettered} dead-lettered in {self.seconds:.1f}s ({rate:.0f} messages/s)"
        )
        if self.unreadable:
            text += f"; {len(self.unreadable)} unreadable"
        return text


def to_stored(message: RawMessage, options: ParseOptions, received_at: datetime) -> StoredMessage:
    """Parse one raw message; what yields no report becomes a dead letter with its reason."""
    if message.truncated_from is not None:
        limit = options.limits.max_message_bytes
        reason = (
            f"message is {message.truncated_from} bytes, over the limit of {limit}: only its head is kept"
        )
        return StoredMessage(message.data, message.source, received_at, rejection=reason)
    try:
        reports = parse_message(
            message.data,
            received_at=received_at,
            trap=options.trap,
            trust=options.trust,
            limits=options.limits,
        )
    except ReportRejected as exc:
        return StoredMessage(message.data, message.source, received_at, rejection=exc.reason)
    return StoredMessage(message.data, message.source, received_at, reports=reports)


def ingest(
    source: Iterable[RawMessage | SourceError],
    store: ReportStore,
    options: ParseOptions,
    *,
    batch_size: int = DEFAULT_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> IngestSummary:
    """Parse and store everything `source` yields. `on_progress(messages, bytes)` after each batch."""
    summary = IngestSummary()
    began = time.perf_counter()
    batch: list[StoredMessage] = []
    read_bytes = 0

    def flush() -> None:
        if batch:
            summary.add(store.write(batch))
            batch.clear()
            if on_progress is not None:
                on_progress(summary.messages, read_bytes)

    for item in source:
        if isinstance(item, SourceError):
            summary.unreadable.append(item)
            continue
        read_bytes += item.truncated_from or len(item.data)
        batch.append(to_stored(item, options, clock()))
        if len(batch) >= batch_size:
            flush()
    flush()
    summary.seconds = time.perf_counter() - began
    return summary
