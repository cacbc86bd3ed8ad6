"""What the Kafka client costs: kafka-python, abusepipe's client, beside confluent-kafka (librdkafka).

    python benchmarks/kafka_client.py [--kafka HOST:PORT] [--reports 10000] [--runs 2]

Both publish the same records: the corpus mix that benchmarks/pipeline.py ingests, parsed once
beforehand. kafka-python publishes through `ReportPublisher`, as `abusepipe ingest` does: batches of
500 messages, each flushed and checked. confluent-kafka publishes the same `encode_message` records
with the same settings (acks=all, idempotent, zstd, linger 10 ms, 256 KiB batches, a flush per 500
messages). Each client then reads every record back in a new consumer group.

For each client and run it prints the CPU seconds of this process (all its threads, the client's own
included) and of the broker, when the broker runs on this machine. The two numbers together are what
the client adds to a pipeline that is short of CPU.

confluent-kafka is not a dependency of abusepipe: `pip install confluent-kafka` to include it.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka import KafkaConsumer  # noqa: E402

from benchmarks.blocklist import cpu_seconds  # noqa: E402
from benchmarks.oneline import run_main  # noqa: E402
from benchmarks.pipeline import scratch_topics, service  # noqa: E402
from benchmarks.store import build_mbox  # noqa: E402
from ingest.defaults import DEFAULT_BATCH  # noqa: E402
from ingest.runner import ParseOptions, ingest  # noqa: E402
from ingest.sources import PathSource  # noqa: E402
from sinks.kafka_config import KafkaSettings, TopicNames  # noqa: E402
from sinks.publisher import MAX_REQUEST_BYTES, ReportPublisher  # noqa: E402
from sinks.stored import BatchResult, StoredMessage  # noqa: E402
from sinks.wire import encode_message  # noqa: E402

Batches = list[list[StoredMessage]]


class Collected:
    """A sink that keeps what `ingest` parsed, in its batches."""

    def __init__(self) -> None:
        self.batches: Batches = []

    def write(self, batch: list[StoredMessage]) -> BatchResult:
        self.batches.append(list(batch))
        return BatchResult(messages=len(batch))


def parsed(reports: int) -> Batches:
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp) / "bench.mbox"
        build_mbox(reports, box)
        sink = Collected()
        source = PathSource([str(box)], max_bytes=64 * 1024 * 1024)
        ingest(source, sink, ParseOptions(), batch_size=DEFAULT_BATCH, workers=os.cpu_count() or 1)
    return sink.batches


class Meter:
    """CPU seconds of this process and of a local broker (none when it runs elsewhere)."""

    def __init__(self) -> None:
        found = subprocess.run(["pgrep", "-f", "kafka.Kafka"], capture_output=True, text=True, check=False)
        pids = found.stdout.split()
        self.broker = int(pids[0]) if len(pids) == 1 else None

    def _broker(self) -> float:
        return 0.0 if self.broker is None else cpu_seconds(self.broker)

    def measure(self, label: str, work: Callable[[], int]) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        own, broker, began = usage.ru_utime + usage.ru_stime, self._broker(), time.perf_counter()
        records = work()
        wall = time.perf_counter() - began
        usage = resource.getrusage(resource.RUSAGE_SELF)
        own = usage.ru_utime + usage.ru_stime - own
        shown = f"  broker {self._broker() - broker:5.2f}" if self.broker is not None else ""
        print(f"  {label:<26} {records:>6} records  {own:5.2f} CPU-s{shown}  wall {wall:5.2f} s", flush=True)


def kafka_python(kafka: KafkaSettings, batches: Batches, total: int, meter: Meter) -> None:
    publisher = ReportPublisher(kafka)

    def publish() -> int:
        for batch in batches:
            publisher.write(batch)  # returns once the broker acknowledged all of it, else raises
        return total

    meter.measure("kafka-python publish", publish)
    publisher.close()
    consumer = KafkaConsumer(
        **kafka.client_options(),
        group_id=kafka.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
    )
    consumer.subscribe(list(kafka.topics.all()))

    def read() -> int:
        seen = 0
        while seen < total:
            for records in consumer.poll(timeout_ms=1000, max_records=2000).values():
                for record in records:
                    seen += 1
                    _ = (record.value, record.key, record.headers, record.offset)
        return seen

    meter.measure("kafka-python read", read)
    consumer.close(autocommit=False)


def confluent(kafka: KafkaSettings, batches: Batches, total: int, meter: Meter) -> None:
    from confluent_kafka import Consumer, Producer

    producer = Producer(
        {
            "bootstrap.servers": ",".join(kafka.bootstrap),
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "zstd",
            "linger.ms": 10,
            "batch.size": 256 * 1024,
            "message.max.bytes": MAX_REQUEST_BYTES,
        }
    )
    failures: list[Any] = []

    def delivered(error: Any, _: Any) -> None:
        if error is not None:
            failures.append(error)

    def publish() -> int:
        sent = 0
        for batch in batches:
            for item in batch:
                for record in encode_message(item, kafka.topics):
                    producer.produce(
                        record.topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,
                        on_delivery=delivered,
                    )
                    sent += 1
            if producer.flush(30) or failures:
                sys.exit(f"confluent-kafka: not delivered: {failures[:1] or 'timeout'}")
        return sent

    meter.measure("confluent-kafka publish", publish)
    consumer = Consumer(
        {
            "bootstrap.servers": ",".join(kafka.bootstrap),
            "group.id": kafka.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(list(kafka.topics.all()))

    def read() -> int:
        seen = 0
        while seen < total:
            for message in consumer.consume(num_messages=2000, timeout=1.0):
                if message.error() is None:
                    seen += 1
                    _ = (message.value(), message.key(), message.headers(), message.offset())
        return seen

    meter.measure("confluent-kafka read", read)
    consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kafka", help="bootstrap server (default: start scripts/kafka)")
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    clients = [kafka_python]
    try:
        import confluent_kafka  # noqa: F401

        clients.append(confluent)
    except ImportError:
        print("confluent-kafka is not installed (pip install confluent-kafka): kafka-python only")
    bootstrap = args.kafka or service("kafka")
    batches = parsed(args.reports)
    messages = sum(map(len, batches))
    reports = sum(len(item.prepared) for batch in batches for item in batch)
    # How many records a message makes does not depend on the topics' names.
    names = TopicNames("reports", "evidence", "deadletter")
    total = sum(len(encode_message(item, names)) for batch in batches for item in batch)
    print(f"machine: {os.cpu_count()} cores; broker {bootstrap}; {messages} messages, {reports} reports")
    meter = Meter()
    for run in range(1, args.runs + 1):
        print(f"run {run}")
        for measure in clients:
            with scratch_topics(bootstrap) as kafka:
                measure(kafka, batches, total, meter)


if __name__ == "__main__":
    run_main(main)
