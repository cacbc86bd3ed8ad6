"""The live-intake core (group commit, durable outcomes) with an in-memory sink."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool

import pytest

from ingest.live import LiveIntake, message_id_of
from ingest.runner import ParseOptions
from ingest.sources import RawMessage
from sinks.store import StoreUnavailable
from sinks.stored import BatchResult, StoredMessage
from tests.mail import forward, junk, many_reports


class MemorySink:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()

    def write(self, batch: Sequence[StoredMessage]) -> BatchResult:
        self.gate.wait(10)
        if self.fail:
            raise StoreUnavailable("store write failed: down for the test")
        self.batches.append(len(batch))
        return BatchResult(messages=len(batch))

    def close(self) -> None:
        pass


def test_messages_arriving_together_are_written_together() -> None:
    sink = MemorySink()
    intake = LiveIntake(sink)
    sink.gate.clear()  # the first batch is held up in the sink, the rest queue behind it
    first = intake.submit(RawMessage(forward([junk()]), "a"), ParseOptions())
    rest = [intake.submit(RawMessage(raw, f"m{i}"), ParseOptions()) for i, raw in enumerate(many_reports(20))]
    sink.gate.set()
    assert first.result(10).reports == 1
    assert all(f.result(10).reports == 1 for f in rest)
    intake.close()
    assert sum(sink.batches) == 21 and len(sink.batches) < 21


def test_an_outcome_fails_when_the_sink_does() -> None:
    intake = LiveIntake(MemorySink(fail=True))
    future = intake.submit(RawMessage(forward([junk()]), "a"), ParseOptions())
    with pytest.raises(StoreUnavailable):
        future.result(10)
    intake.close()


def test_a_dead_parser_process_is_replaced() -> None:
    sink = MemorySink()
    intake = LiveIntake(sink, workers=1)
    assert intake.submit(RawMessage(forward([junk()]), "a"), ParseOptions()).result(30).reports == 1
    pool = intake._pool
    assert pool is not None
    for pid in list(pool._processes):  # the OOM killer, say
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        intake.submit(RawMessage(forward([junk(extra=[("X-N", "1")])]), "b"), ParseOptions()).result(30)
    again = intake.submit(RawMessage(forward([junk(extra=[("X-N", "2")])]), "c"), ParseOptions())
    assert again.result(30).reports == 1
    intake.close()


def test_message_id_of_the_received_message() -> None:
    assert (
        message_id_of(b"Subject: x\r\nMessage-ID: <a@b.example>\r\n\r\nMessage-ID: <body@x>\r\n")
        == "a@b.example"
    )
    assert message_id_of(b"Subject: x\r\n\r\nMessage-ID: <body@x>\r\n") is None
    assert message_id_of(b"Subject: x\n\nMessage-ID: <body@x>\n") is None  # LF line ends (stdin)
    assert message_id_of(b"message-id:   <spaced@x>  \n\n") == "spaced@x"
