"""The ingest loop: read raw messages, parse them, and write them in batches to a sink.

A batch is acknowledged (counted, reported done) only once the sink made it durable: the store's
transaction committed, or the broker acknowledged every record. A sink failure stops the run with
`StoreUnavailable` or `BrokerUnavailable`: the caller exits with EX_TEMPFAIL so that an MTA retries.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

from abusepipe.errors import ReportRejected
from ingest.defaults import DEFAULT_BATCH
from ingest.enrich import Enrichment, enricher_for
from ingest.sources import RawMessage, SourceError
from parsers import ParseLimits, TrustPolicy, parse_message
from sinks.base import BatchSink
from sinks.stored import BatchResult, StoredMessage

BATCH_BYTES = 64 * 1024 * 1024
"""A batch is also written once its messages hold this much: memory stays bounded for huge mail."""
CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParseOptions:
    trap: bool = False
    trust: TrustPolicy = field(default_factory=TrustPolicy)
    limits: ParseLimits = field(default_factory=ParseLimits)
    feedback_type: str | None = None
    """Overrides the parsed feedback type: the address a report was sent to can say what it is
    (`phish@` receives fraud)."""
    enrichment: Enrichment | None = None
    """ASN and country databases for the reports' sources (opened once in each worker)."""


@dataclass(slots=True)
class IngestSummary(BatchResult):
    unreadable: list[SourceError] = field(default_factory=list)
    seconds: float = 0.0
    verb: str = "stored"

    def line(self) -> str:
        rate = self.messages / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.messages} messages: {self.reports} reports {self.verb}, {self.duplicates} duplicates, "
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
        return StoredMessage(
            message.data, message.source, received_at, rejection=reason, size=message.truncated_from
        )
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
    if options.feedback_type is not None:
        reports = [r.model_copy(update={"feedback_type": options.feedback_type}) for r in reports]
    if options.enrichment:
        enricher = enricher_for(options.enrichment)
        reports = [enricher.enrich(r) for r in reports]
    return StoredMessage(message.data, message.source, received_at, reports=reports)


def ingest(
    source: Iterable[RawMessage | SourceError],
    sink: BatchSink,
    options: ParseOptions,
    *,
    batch_size: int = DEFAULT_BATCH,
    workers: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    on_acknowledged: Callable[[list[StoredMessage]], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> IngestSummary:
    """Parse everything `source` yields and write it to `sink` (the store, or Kafka), in order.
    `on_progress(messages, bytes)` and `on_acknowledged(batch)` after each committed batch. With
    `workers`, parsing runs in that many processes while this one writes."""
    summary = IngestSummary()
    began = time.perf_counter()
    batch: list[StoredMessage] = []
    read_bytes = 0
    batch_bytes = 0

    def committed(batch: list[StoredMessage], result: BatchResult, read: int) -> None:
        if on_acknowledged is not None:
            on_acknowledged(batch)
        summary.add(result)
        if on_progress is not None:
            on_progress(summary.messages, read)

    prepared = _parallel(source, options, workers, clock) if workers > 0 else _serial(source, options, clock)
    with BatchWriter(sink, committed) as writer:
        for item in prepared:
            if isinstance(item, SourceError):
                summary.unreadable.append(item)
                continue
            read_bytes += item.size
            batch_bytes += len(item.raw)
            batch.append(item)
            if len(batch) >= batch_size or batch_bytes >= BATCH_BYTES:
                writer.write(batch, read_bytes)
                batch, batch_bytes = [], 0
        if batch:
            writer.write(batch, read_bytes)
    summary.seconds = time.perf_counter() - began
    return summary


class BatchWriter:
    """Writes batches in a background thread, one at a time and in order, while the caller reads and
    parses the next batch: the database round trips overlap with that work instead of adding to it.

    A batch counts (`committed` is called) only once its transaction committed; the first failure is
    raised to the caller at its next `write` or at exit, and no later batch is written after it.
    """

    def __init__(
        self, sink: BatchSink, committed: Callable[[list[StoredMessage], BatchResult, int], None]
    ) -> None:
        self._sink = sink
        self._committed = committed
        self._queue: queue.Queue[tuple[list[StoredMessage], int] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="abusepipe-writer", daemon=True)

    def __enter__(self) -> BatchWriter:
        self._thread.start()
        return self

    def write(self, batch: list[StoredMessage], read_bytes: int) -> None:
        self._raise_failure()
        self._queue.put((batch, read_bytes))

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc[0] is None:
            self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: nothing after a failed batch is written
            batch, read = job
            try:
                self._committed(batch, self._sink.write(batch), read)
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc


Prepared = Iterator[StoredMessage | SourceError]


def _serial(
    source: Iterable[RawMessage | SourceError], options: ParseOptions, clock: Callable[[], datetime]
) -> Prepared:
    for item in source:
        yield item if isinstance(item, SourceError) else to_stored(item, options, clock())


_worker_options = ParseOptions()


def _init_worker(options: ParseOptions) -> None:
    global _worker_options  # noqa: PLW0603 - one process-wide setting per worker, set once at start
    _worker_options = options


def _prepare_chunk(chunk: list[tuple[RawMessage, datetime]]) -> list[StoredMessage]:
    return [to_stored(message, _worker_options, received_at) for message, received_at in chunk]


def _parallel(
    source: Iterable[RawMessage | SourceError],
    options: ParseOptions,
    workers: int,
    clock: Callable[[], datetime],
    *,
    chunk_size: int = 64,
) -> Prepared:
    """Parse in worker processes, results in input order, with a bounded number of chunks in flight
    (so a multi-GB mbox is never read ahead into memory)."""
    from ingest.workers import parser_pool  # noqa: PLC0415 - multiprocessing only when used

    in_flight: deque[Future[list[StoredMessage]]] = deque()
    limit = workers * 4
    with parser_pool(workers, initializer=_init_worker, initargs=(options,)) as pool:
        chunk: list[tuple[RawMessage, datetime]] = []
        chunk_bytes = 0
        for item in source:
            if isinstance(item, SourceError):
                yield item
                continue
            chunk.append((item, clock()))
            chunk_bytes += len(item.data)
            if len(chunk) >= chunk_size or chunk_bytes >= CHUNK_BYTES:
                in_flight.append(pool.submit(_prepare_chunk, chunk))
                chunk, chunk_bytes = [], 0
                while len(in_flight) > limit:
                    yield from in_flight.popleft().result()
        if chunk:
            in_flight.append(pool.submit(_prepare_chunk, chunk))
        while in_flight:
            yield from in_flight.popleft().result()
