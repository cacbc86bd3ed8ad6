"""`abusepipe topics create`: the topics with the partitions and settings the pipeline relies on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from sinks import kafka_crc  # noqa: F401  (importing it plugs CRC-32C in C into kafka-python)
from sinks.kafka_config import BrokerUnavailable, KafkaSettings
from sinks.publisher import MAX_REQUEST_BYTES

DAY_MS = 24 * 3600 * 1000
RETENTION_DAYS = {"reports": 14, "evidence": 14, "deadletter": 30}
"""Long enough to rebuild a lost store or catch up after an outage of days."""


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    topic: str
    created: bool
    detail: str


def topic_configs(role: str, replication: int) -> dict[str, str]:
    configs = {
        "retention.ms": str(RETENTION_DAYS[role] * DAY_MS),
        "compression.type": "producer",  # keep the producer's zstd batches as they are
        # With one replica a write can only wait for that one; with more, acks=all means two.
        "min.insync.replicas": "2" if replication >= 3 else "1",
        "unclean.leader.election.enable": "false",
    }
    if role == "reports":
        configs["max.message.bytes"] = str(MAX_REQUEST_BYTES + 1024)
    return configs


def create_topics(
    kafka: KafkaSettings, *, partitions: int = 6, replication: int | None = None
) -> list[TopicOutcome]:
    """Create the missing topics; existing ones are left as they are (and reported so)."""
    try:
        admin = KafkaAdminClient(**kafka.client_options())
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {','.join(kafka.bootstrap)}: {exc}") from exc
    try:
        if replication is None:
            brokers = len(admin.describe_cluster().get("brokers", [])) or 1
            replication = min(3, brokers)
        names = kafka.topics
        roles = {names.reports: "reports", names.evidence: "evidence", names.deadletter: "deadletter"}
        outcomes = []
        for topic, role in roles.items():
            # One topic at a time: one that exists must not hide the creation of the others.
            new = NewTopic(topic, partitions, replication, topic_configs=topic_configs(role, replication))
            try:
                response: Any = admin.create_topics([new])
            except TopicAlreadyExistsError:
                outcomes.append(TopicOutcome(topic, False, "exists (left unchanged)"))
                continue
            errors = [t for t in _topics_of(response) if t.get("error_code")]
            if errors:
                first = errors[0]
                if first.get("error_code") == TopicAlreadyExistsError.errno:
                    outcomes.append(TopicOutcome(topic, False, "exists (left unchanged)"))
                    continue
                raise BrokerUnavailable(f"cannot create topic {topic}: {first.get('error_message') or first}")
            outcomes.append(TopicOutcome(topic, True, f"{partitions} partitions, replication {replication}"))
        _wait_until_listed(admin, list(roles))
        return outcomes
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot create the topics: {exc}") from exc
    finally:
        admin.close()


def _topics_of(response: Any) -> list[dict[str, Any]]:
    if isinstance(response, dict):
        topics = response.get("topics", [])
        return [t for t in topics if isinstance(t, dict)]
    return []


def _wait_until_listed(admin: KafkaAdminClient, topics: list[str], *, timeout: float = 30.0) -> None:
    """A new topic reaches the brokers' metadata a moment after the controller created it: return only
    once it is there, so that a publisher started next finds it."""
    deadline = time.monotonic() + timeout
    while not set(topics) <= set(admin.list_topics()):
        if time.monotonic() > deadline:
            raise BrokerUnavailable(
                f"the new topics did not appear in the cluster metadata within {timeout:.0f}s"
            )
        time.sleep(0.1)
