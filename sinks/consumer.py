"""`abusepipe consume`: a consumer group that writes what it reads into the SQL store.

Effectively once: every batch and the offsets it reaches are committed in one SQL transaction
(`sinks.consumed`), and each partition resumes from the offset stored there, whatever Kafka's own
group offsets say (they are committed afterwards only so that lag shows in Kafka's tools).

While the database is down the consumer pauses its partitions, keeps its group membership and retries
the same batch with growing delays: nothing is skipped and nothing is read ahead into memory. While Kafka
is down it waits the same way and carries on from the stored offsets when the broker is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from sinks import kafka_crc  # noqa: F401  (importing it plugs CRC-32C in C into kafka-python)
from sinks.consumed import Consumed, ConsumedResult, store_consumed, stored_offsets
from sinks.kafka_config import BrokerUnavailable, KafkaSettings
from sinks.store import ReportStore, StoreError, StoreUnavailable, store_errors
from sinks.stored import BatchResult
from sinks.wire import Poison, decode, where

Log = Callable[[str], None]


@dataclass(slots=True)
class ConsumerSummary(BatchResult):
    """What was stored (the BatchResult counters) out of how many records read."""

    records: int = 0
    skipped: int = 0
    batches: int = 0
    seconds: float = 0.0

    def consumed(self, result: ConsumedResult) -> None:
        self.records += result.records
        self.skipped += result.skipped
        self.add(result.stored)
        self.batches += 1

    def line(self) -> str:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.records} records: {self.reports} reports stored, {self.duplicates} duplicates, "
            f"{self.dead_lettered} dead-lettered, {self.skipped} already stored, in {self.batches} "
            f"transactions over {self.seconds:.1f}s ({rate:.0f} records/s)"
        )


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    batch_records: int = 2000
    """Most records per transaction."""
    max_wait: float = 0.2
    """Seconds a batch may wait to fill once it holds a record: bounds publish-to-queryable latency."""
    backoff_start: float = 0.5
    backoff_max: float = 30.0
    stats_interval: float = 60.0
    """Seconds between progress lines in the log (only when records arrived since the last one)."""
    heartbeat_file: Path | None = None
    """Touched on every loop turn (also while waiting for the database): a liveness probe reads its age."""


BROKER_REMINDER_SECONDS = 60.0
"""How often a Kafka outage is logged again while it lasts."""

OnCommit = Callable[[Sequence[Consumed], ConsumedResult, float], None]


class StoreConsumer:
    def __init__(
        self,
        kafka: KafkaSettings,
        store: ReportStore,
        options: ConsumerOptions | None = None,
        *,
        log: Log = lambda _: None,
        on_commit: OnCommit | None = None,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self.kafka = kafka
        self.store = store
        self.options = options or ConsumerOptions()
        self.summary = ConsumerSummary()
        self._log = log
        self._on_commit = on_commit
        self._unpositioned: set[TopicPartition] = set()
        self._lock = threading.Lock()
        self._generation = 0
        """Bumped on every revocation: a batch read before it may belong to another member now."""
        self._broker_down: float | None = None
        """When the current Kafka outage began (monotonic), None while polls succeed."""
        self._broker_noted = 0.0
        self._broker_delay = self.options.backoff_start
        extra = consumer_options or {}
        try:
            self._consumer = KafkaConsumer(
                **kafka.client_options(),
                group_id=kafka.group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.options.batch_records,
                session_timeout_ms=kafka.session_timeout_ms,
                heartbeat_interval_ms=min(3000, kafka.session_timeout_ms // 3),
                **extra,
            )
            self._consumer.subscribe(list(kafka.topics.all()), listener=_Rebalance(self))
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot reach Kafka at {','.join(kafka.bootstrap)}: {exc}") from exc

    # --- rebalance callbacks (they run on kafka-python's IO thread) -----------------------------------

    def _assigned(self, partitions: Sequence[TopicPartition]) -> None:
        if not partitions:
            return
        try:
            self._position(partitions)
        except (StoreError, SQLAlchemyError) as exc:
            # Not readable now: hold these partitions until the main loop can position them.
            self._consumer.pause(*partitions)
            with self._lock:
                self._unpositioned.update(partitions)
            self._log(f"cannot read stored offsets ({' '.join(str(exc).split())[:200]}); will retry")

    def _revoked(self, _: Sequence[TopicPartition]) -> None:
        with self._lock:
            self._generation += 1

    def _position(self, partitions: Sequence[TopicPartition]) -> None:
        with self.store.connect() as connection:
            stored = stored_offsets(
                connection, self.kafka.group, [(tp.topic, tp.partition) for tp in partitions]
            )
        for tp in partitions:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)

    # --- main loop ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> ConsumerSummary:
        began = time.perf_counter()
        last_stats, last_records = began, 0
        try:
            while not stop.is_set():
                self._beat()
                now = time.perf_counter()
                if now - last_stats >= self.options.stats_interval and self.summary.records > last_records:
                    self.summary.seconds = now - began
                    self._log(f"so far: {self.summary.line()}")
                    last_stats, last_records = now, self.summary.records
                self._position_held(stop)
                batch, generation = self._collect(stop)
                if batch:
                    self._write(batch, generation, stop)
        finally:
            self.summary.seconds = time.perf_counter() - began
        return self.summary

    def _beat(self) -> None:
        path = self.options.heartbeat_file
        if path is not None:
            try:
                path.touch()
            except OSError as exc:
                self._log(f"cannot touch the heartbeat file {path}: {exc.strerror or exc}")

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False)
        except KafkaError as exc:
            self._log(f"closing the Kafka consumer: {exc}")

    def _position_held(self, stop: threading.Event) -> None:
        with self._lock:
            held = list(self._unpositioned)
        if not held:
            return
        assigned = self._consumer.assignment()
        held = [tp for tp in held if tp in assigned]
        try:
            self._position(held)
        except (StoreError, SQLAlchemyError):
            self._poll(stop, 0)
            stop.wait(self.options.backoff_start)
            return
        with self._lock:
            self._unpositioned.clear()
        self._consumer.resume(*held)

    def _collect(self, stop: threading.Event) -> tuple[list[Consumed], int]:
        options = self.options
        batch: list[Consumed] = []
        with self._lock:
            generation = self._generation
        deadline: float | None = None
        while len(batch) < options.batch_records and not stop.is_set():
            timeout = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
            polled = self._poll(stop, int(timeout * 1000), options.batch_records - len(batch))
            for records in polled.values():
                for record in records:
                    item = decode(record, self.kafka.topics)
                    value = record.value or b""
                    batch.append(
                        Consumed(record.topic, record.partition, record.offset, item, value, record.timestamp)
                    )
            if batch and deadline is None:
                deadline = time.monotonic() + options.max_wait
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not batch:
                break  # nothing arrived within the poll timeout: let the caller check `stop`
        return batch, generation

    def _write(self, batch: list[Consumed], generation: int, stop: threading.Event) -> None:
        delay = self.options.backoff_start
        paused = False
        try:
            while True:
                try:
                    for part, result in self._commit(batch):
                        self._committed(part, result)
                    return
                except StoreUnavailable as exc:
                    if not paused:
                        self._consumer.pause(*self._consumer.assignment())
                        paused = True
                    self._log(
                        f"store unavailable: {exc}; holding {len(batch)} records, retrying in {delay:.1f}s"
                    )
                    if not self._wait(delay, stop):
                        return  # stopping: the batch was not stored, its offsets were not advanced
                    delay = min(delay * 2, self.options.backoff_max)
                    with self._lock:
                        if self._generation != generation:
                            self._log(
                                "partitions were reassigned while waiting; the batch will be read again"
                            )
                            return
        finally:
            if paused:
                with self._lock:
                    held = set(self._unpositioned)  # these stay paused until positioned
                self._consumer.resume(*(tp for tp in self._consumer.assignment() if tp not in held))

    def _wait(self, seconds: float, stop: threading.Event) -> bool:
        """Sleep while staying in the group (the partitions are paused, so no records arrive)."""
        end = time.monotonic() + seconds
        while not stop.is_set():
            self._beat()
            left = end - time.monotonic()
            if left <= 0:
                return True
            self._poll(stop, int(min(left, 1.0) * 1000))
        return False

    def _poll(self, stop: threading.Event, timeout_ms: int, max_records: int | None = None) -> dict[Any, Any]:
        """One poll; while Kafka is unreachable, an empty one after a growing pause.

        kafka-python 3 lets some connection failures out of `poll` (a metadata refresh that fails while
        it looks for the group coordinator). They are retriable by its own classification, and the
        store, not Kafka, holds the positions, so waiting for the broker loses and repeats nothing.
        """
        try:
            polled: dict[Any, Any] = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            if not exc.retriable:
                raise BrokerUnavailable(f"Kafka failed: {exc}") from exc
            now = time.monotonic()
            if self._broker_down is None:
                self._broker_down = self._broker_noted = now
                self._log(f"Kafka unavailable: {exc}; waiting for it")
            elif now - self._broker_noted >= BROKER_REMINDER_SECONDS:
                self._broker_noted = now
                self._log(f"Kafka still unavailable after {now - self._broker_down:.0f}s: {exc}")
            delay = self._broker_delay
            self._broker_delay = min(delay * 2, self.options.backoff_max)
            stop.wait(delay)
            return {}
        self._broker_delay = self.options.backoff_start
        # A poll can come back empty without an error while the broker is still down: only records
        # prove that it is back.
        if polled and self._broker_down is not None:
            self._log(f"reading from Kafka again after {time.monotonic() - self._broker_down:.1f}s")
            self._broker_down = None
        return polled

    def _commit(self, batch: list[Consumed]) -> list[tuple[list[Consumed], ConsumedResult]]:
        """Store the batch with its offsets. A record the database refuses for good is isolated by
        halving the batch and dead-lettered on its own, so it can neither block nor vanish."""
        try:
            return [(batch, self._transaction(batch))]
        except StoreUnavailable:
            raise
        except StoreError as exc:
            if len(batch) == 1:
                return [(batch, self._transaction([_refused(batch[0], exc)]))]
            middle = len(batch) // 2
            return [*self._commit(batch[:middle]), *self._commit(batch[middle:])]

    def _transaction(self, batch: list[Consumed]) -> ConsumedResult:
        with store_errors("store write failed"):
            try:
                with self.store.engine.begin() as connection:
                    return store_consumed(connection, self.kafka.group, batch)
            except IntegrityError as exc:
                # Two members inserting the first offsets row of one partition at once: a retry settles it.
                raise StoreUnavailable(f"concurrent offset write: {exc.orig}") from exc

    def _committed(self, batch: list[Consumed], result: ConsumedResult) -> None:
        with self._lock:
            self.summary.consumed(result)
        self.store.committed(result.stored)  # the blocklist re-evaluates what the batch touched
        if self._on_commit is not None:
            self._on_commit(batch, result, time.time())
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in result.next_offsets.items()
        }
        try:
            self._consumer.commit_async(offsets)  # for Kafka's lag tools only; the store is the authority
        except KafkaError as exc:
            self._log(f"could not mirror offsets to Kafka: {exc}")


def _refused(consumed: Consumed, exc: StoreError) -> Consumed:
    reason = f"the store refused this record: {exc}"
    poison = Poison(reason, consumed.value, where(consumed), datetime.now(UTC))
    return Consumed(consumed.topic, consumed.partition, consumed.offset, poison, consumed.value)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python has no type hints
    def __init__(self, owner: StoreConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._owner._revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner._assigned(assigned)
