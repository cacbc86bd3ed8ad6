"""Intake counters as Prometheus metrics (`--metrics-listen HOST:PORT` serves them at /metrics)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from abusepipe.errors import ConfigError
from ingest.live import IntakeCounters

HELP = {
    "received": "messages received",
    "reports": "reports stored or published",
    "rejected": "recipients rejected at the door (never stored; the sender is told)",
    "dead_lettered": "messages kept as dead letters (no report in them)",
    "retried": "messages not durable this time; the source keeps them and retries",
}


class _CountersCollector(Collector):
    def __init__(self, intake: str, counters: IntakeCounters) -> None:
        self._intake = intake
        self._counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, value in self._counters.snapshot().items():
            family = CounterMetricFamily(f"abusepipe_intake_{name}", HELP[name], labels=["intake"])
            family.add_metric([self._intake], value)
            yield family


def serve_metrics(address: tuple[str, int], intake: str, counters: IntakeCounters) -> None:
    host, port = address
    registry = CollectorRegistry()
    registry.register(_CountersCollector(intake, counters))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
