"""The core of the live intakes (SMTP/LMTP, IMAP): one message at a time in, durable outcome out.

`LiveIntake.submit` parses a message in a worker process and hands it to a writer thread that groups
what arrives together into one batch for the sink (group commit: one transaction or one broker
round trip for many concurrent messages). The returned future resolves only once the batch is durable;
it fails with `StoreUnavailable`/`BrokerUnavailable` when it is not, and the caller must then not
acknowledge the message (SMTP answers 451, IMAP leaves it unmarked).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime

from abusepipe.errors import AbusepipeError
from ingest.messagelog import MessageLog, message_id_of
from ingest.runner import ParseOptions, to_stored
from ingest.sources import RawMessage
from ingest.workers import parser_pool
from sinks.base import BatchSink
from sinks.stored import StoredMessage

__all__ = [
    "IntakeCounters",
    "LiveIntake",
    "MessageLog",
    "Outcome",
    "message_id_of",
    "settle",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    reports: int
    dead_letter: str | None
    """Why the message yielded no report (it is stored as a dead letter), or None."""


@dataclass(slots=True)
class IntakeCounters:
    """What every intake counts; shown in the periodic log line and, optionally, as Prometheus metrics."""

    received: int = 0
    reports: int = 0
    rejected: int = 0
    """Recipients rejected at the door (not an abuse address here): never stored, the sender is told.
    (Messages over the size limit are answered 552 by aiosmtpd itself and not counted here.)"""
    dead_lettered: int = 0
    retried: int = 0
    """Not durable this time (store or broker unavailable): the source keeps the message and retries."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **amounts: int) -> None:
        with self.lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {
                "received": self.received,
                "reports": self.reports,
                "rejected": self.rejected,
                "dead_lettered": self.dead_lettered,
                "retried": self.retried,
            }

    def line(self) -> str:
        return ", ".join(f"{count} {name.replace('_', '-')}" for name, count in self.snapshot().items())


def settle(
    future: Future[Outcome], counters: IntakeCounters, log: MessageLog, *, source: str, message_id: str | None
) -> Outcome | None:
    """Count and log what became of a submitted message: its outcome once durable, or None when it
    is not (the caller must not acknowledge it: SMTP answers 451, IMAP leaves it unmarked)."""
    error = future.exception()
    if error is not None:
        # A bug (not one of our errors) must not lose the message either: it is retried the same way.
        reason = (
            str(error)
            if isinstance(error, AbusepipeError)
            else f"internal error: {type(error).__name__}: {error}"
        )
        counters.add(retried=1)
        log.message(source=source, message_id=message_id, outcome="retry", reason=reason)
        return None
    outcome = future.result()
    if outcome.dead_letter is not None:
        counters.add(dead_lettered=1)
        log.message(source=source, message_id=message_id, outcome="dead-lettered", reason=outcome.dead_letter)
    else:
        counters.add(reports=outcome.reports)
        log.message(source=source, message_id=message_id, outcome="stored", reports=outcome.reports)
    return outcome


_Job = tuple[StoredMessage, "Future[Outcome]"]


class LiveIntake:
    def __init__(
        self,
        sink: BatchSink,
        *,
        workers: int = 0,
        batch_size: int = 200,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sink = sink
        self._workers = workers
        self._pool = parser_pool(workers) if workers > 0 else None
        self._pool_lock = threading.Lock()
        self._retired: list[ProcessPoolExecutor] = []
        self._batch_size = batch_size
        self._clock = clock
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="abusepipe-live-writer", daemon=True)
        self._writer.start()

    def submit(self, message: RawMessage, options: ParseOptions) -> Future[Outcome]:
        """Parse and write one message; the future resolves once it is durable (or fails)."""
        done: Future[Outcome] = Future()
        received = self._clock()
        if self._pool is None:
            try:
                self._jobs.put((to_stored(message, options, received), done))
            except Exception as exc:  # a parser bug: fail this message, keep serving the others
                done.set_exception(exc)
            return done
        with self._pool_lock:
            pool, retired = self._pool, self._retired
            self._retired = []
        for old in retired:  # here, not in a pool's own callback: its shutdown takes the pool's lock
            old.shutdown(wait=False, cancel_futures=True)
        try:
            parsed = pool.submit(to_stored, message, options, received)
        except BrokenProcessPool as exc:
            self._replace_pool(pool)
            done.set_exception(exc)
            return done

        def queue_it(parsed: Future[StoredMessage]) -> None:
            error = parsed.exception()
            if isinstance(error, BrokenProcessPool):
                # A parser process died (killed, out of memory): this message is retried by its sender,
                # and the next ones get fresh processes.
                self._replace_pool(pool)
            if error is not None:
                done.set_exception(error)
            else:
                self._jobs.put((parsed.result(), done))

        parsed.add_done_callback(queue_it)
        return done

    def _replace_pool(self, broken: ProcessPoolExecutor) -> None:
        """A new pool for the next messages (its processes start with the next submit); the broken one
        is shut down by the next `submit` — this may run in the broken pool's own manager thread, which
        holds the lock its shutdown needs (Python 3.12+ deadlocks there)."""
        with self._pool_lock:
            if self._pool is broken:
                self._retired.append(broken)
                self._pool = parser_pool(self._workers)

    def close(self) -> None:
        for old in self._retired:
            old.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._jobs.put(None)
        self._writer.join()

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            job = self._jobs.get()
            if job is None:
                return
            # Group commit: what queued up while the previous batch was being written goes in this one.
            # It does not wait for more: the senders wait for their answers, so waiting only adds latency.
            batch = [job]
            while len(batch) < self._batch_size:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            self._write(batch)

    def _write(self, batch: list[_Job]) -> None:
        try:
            self._sink.write([item for item, _ in batch])
        except Exception as exc:  # handed to every waiting caller: none of them acknowledges
            for _, done in batch:
                done.set_exception(exc)
            return
        for item, done in batch:
            done.set_result(Outcome(len(item.prepared), None if item.prepared else item.reason))
