"""Publishing ingested messages to Kafka: the sink `abusepipe ingest` writes to when Kafka is configured.

`write` returns only once the broker acknowledged every record of the batch (acks=all, idempotent
producer, so the retries it makes while a broker restarts neither lose nor duplicate records); its
caller acknowledges the source only then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError

from sinks import kafka_crc  # noqa: F401  (importing it plugs CRC-32C in C into kafka-python)
from sinks.kafka_config import BrokerUnavailable, KafkaSettings
from sinks.stored import BatchResult, StoredMessage
from sinks.wire import encode_message

MAX_REQUEST_BYTES = 8 * 1024 * 1024
"""Largest report record: a report document is far smaller; evidence is chunked far below it."""


class ReportPublisher:
    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        delivery_timeout: float | None = None,
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        self.kafka = kafka
        self._timeout = delivery_timeout if delivery_timeout is not None else kafka.delivery_timeout
        self._extra = producer_options or {}
        self._producer = self._new_producer()
        self._check_topics()

    def _new_producer(self) -> KafkaProducer:
        try:
            return KafkaProducer(
                **self.kafka.client_options(),
                acks="all",
                enable_idempotence=True,
                compression_type="zstd",
                linger_ms=10,
                batch_size=256 * 1024,
                max_request_size=MAX_REQUEST_BYTES,
                delivery_timeout_ms=int(self._timeout * 1000),
                # kafka-python requires the delivery timeout to cover linger plus one request.
                request_timeout_ms=min(30_000, max(1_000, int(self._timeout * 1000) - 1_000)),
                # send() may block this long for metadata or buffer space: never beyond the timeout.
                max_block_ms=min(60_000, int(self._timeout * 1000)),
                allow_auto_create_topics=False,  # topics get their settings from `abusepipe topics create`
                **self._extra,
            )
        except KafkaError as exc:
            servers = ",".join(self.kafka.bootstrap)
            raise BrokerUnavailable(f"cannot reach Kafka at {servers}: {exc}") from exc

    def _replace_producer(self) -> None:
        """After a failed batch the idempotent producer's sequence state is suspect (records may have
        expired mid-flight): a long-running intake starts afresh with a new producer id. Records of
        the failed batch that did reach the broker are harmless duplicates (unique report ids)."""
        with contextlib.suppress(KafkaError):
            self._producer.close(timeout=0)
        with contextlib.suppress(BrokerUnavailable):  # still down: the next write reports it
            self._producer = self._new_producer()

    def _check_topics(self) -> None:
        """Fail at once, with the fix, when a topic is missing (the producer would wait for it)."""
        try:
            admin = KafkaAdminClient(**self.kafka.client_options())
            try:
                existing = set(admin.list_topics())
            finally:
                admin.close()
        except KafkaError as exc:
            self.close()
            raise BrokerUnavailable(
                f"cannot read the topics of Kafka at {','.join(self.kafka.bootstrap)}: {exc}"
            ) from exc
        missing = [topic for topic in self.kafka.topics.all() if topic not in existing]
        if missing:
            self.close()
            servers = ",".join(self.kafka.bootstrap)
            what = f"topic {missing[0]} is" if len(missing) == 1 else f"topics {', '.join(missing)} are"
            raise BrokerUnavailable(
                f"{what} not on the Kafka cluster at {servers}: create with `abusepipe topics create`"
            )

    def write(self, batch: Sequence[StoredMessage]) -> BatchResult:
        """Publish a batch; return once every record is acknowledged, else raise `BrokerUnavailable`."""
        result = BatchResult(messages=len(batch))
        futures = []
        try:
            for item in batch:
                for record in encode_message(item, self.kafka.topics):
                    futures.append(
                        self._producer.send(
                            record.topic, value=record.value, key=record.key, headers=record.headers
                        )
                    )
                if item.prepared:
                    result.reports += len(item.prepared)
                else:
                    result.dead_lettered += 1
            self._producer.flush(timeout=self._timeout + 10)
        except KafkaError as exc:
            self._replace_producer()
            raise BrokerUnavailable(f"publishing to Kafka failed: {exc}") from exc
        for future in futures:
            if not future.is_done or future.failed():
                self._replace_producer()
            if not future.is_done:
                raise BrokerUnavailable(f"Kafka did not acknowledge within {self._timeout:.0f}s")
            if future.failed():
                raise BrokerUnavailable(f"Kafka refused a record: {future.exception}") from future.exception
        return result

    def close(self) -> None:
        # Nothing is pending once `write` returned: a failed close loses nothing.
        with contextlib.suppress(KafkaError):
            self._producer.close(timeout=10)
