"""The one interface between intake and sinks: a sink writes batches of ingested messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sinks.stored import BatchResult, StoredMessage


class BatchSink(Protocol):
    """`ReportStore` (the embedded path) and `ReportPublisher` (Kafka) are the two sinks.

    `write` returns only once the batch is durable (committed, or acknowledged by the broker) and
    raises otherwise: the caller acknowledges its source only after it returned."""

    def write(self, batch: Sequence[StoredMessage]) -> BatchResult: ...

    def close(self) -> None: ...
