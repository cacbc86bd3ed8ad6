"""How abusepipe reaches Kafka: the topic names and the connection options every client shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from abusepipe.errors import Unavailable


class BrokerUnavailable(Unavailable):
    """Kafka cannot be reached, or did not acknowledge in time: nothing was acknowledged; retry later."""


@dataclass(frozen=True, slots=True)
class TopicNames:
    reports: str = "abuse.reports.v1"
    """Normalized reports (JSON), keyed by the offending source's aggregation key."""
    evidence: str = "abuse.evidence.v1"
    """The original bytes of every reported input (zstd), in chunks, keyed by their sha256."""
    deadletter: str = "abuse.deadletter.v1"
    """Inputs that yielded no report: raw bytes in chunks, the reason and the source in headers."""

    def all(self) -> tuple[str, str, str]:
        return (self.reports, self.evidence, self.deadletter)


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap: tuple[str, ...]
    topics: TopicNames = field(default_factory=TopicNames)
    group: str = "abusepipe-store"
    client_id: str = "abusepipe"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    session_timeout_ms: int = 45_000
    delivery_timeout: float = 120.0
    """Seconds a published record may take to be acknowledged, retries included."""
    """How long a silent consumer keeps its partitions (a killed one holds them this long)."""

    def client_options(self) -> dict[str, Any]:
        """Options shared by the producer, the consumer and the admin client of kafka-python."""
        options: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            # Back after a broker restart within seconds (kafka-python's default backs off to 30 s).
            "reconnect_backoff_max_ms": 5_000,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            options["ssl_cafile"] = self.ssl_cafile
        return options

    def environment(self) -> dict[str, str]:
        """The `ABUSEPIPE_KAFKA_*` variables that configure this connection in another abusepipe process
        (topics, group, timeouts; credentials are left to the caller)."""
        return {
            "ABUSEPIPE_KAFKA_BOOTSTRAP": ",".join(self.bootstrap),
            "ABUSEPIPE_KAFKA_TOPIC_REPORTS": self.topics.reports,
            "ABUSEPIPE_KAFKA_TOPIC_EVIDENCE": self.topics.evidence,
            "ABUSEPIPE_KAFKA_TOPIC_DEADLETTER": self.topics.deadletter,
            "ABUSEPIPE_KAFKA_GROUP": self.group,
            "ABUSEPIPE_KAFKA_CLIENT_ID": self.client_id,
            "ABUSEPIPE_KAFKA_SESSION_TIMEOUT_MS": str(self.session_timeout_ms),
            "ABUSEPIPE_KAFKA_DELIVERY_TIMEOUT": str(self.delivery_timeout),
        }

    def display(self) -> str:
        return f"kafka {','.join(self.bootstrap)} ({self.topics.reports})"
