"""`abusepipe topics create` and `abusepipe consume`: the Kafka side of the pipeline."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from abusepipe.cli.common import (
    EXIT_OK,
    display_url,
    positive,
    say,
    stop_on_signals,
    store_option,
    store_url,
    with_listing_policy,
)
from abusepipe.errors import ConfigError

if TYPE_CHECKING:
    from abusepipe.settings import Settings
    from sinks.kafka_config import KafkaSettings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = commands.add_parser("topics", help="Kafka topics of the pipeline")
    topic_commands = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = topic_commands.add_parser("create", help="create the missing topics (existing ones are kept)")
    create.add_argument("--partitions", type=positive, default=6, help="partitions per topic (default 6)")
    create.add_argument(
        "--replication-factor", type=positive, default=None, help="default: 3, or fewer brokers if fewer"
    )
    create.set_defaults(run=run_topics)

    consume = commands.add_parser(
        "consume", help="store what is published to Kafka (a consumer group; run several to share the load)"
    )
    consume.add_argument("--group", help="consumer group (default: ABUSEPIPE_KAFKA_GROUP or abusepipe-store)")
    consume.add_argument("--batch", type=positive, default=2000, help="most records per transaction")
    consume.add_argument(
        "--max-wait", type=float, default=0.2, metavar="SECONDS", help="how long a batch may wait to fill"
    )
    consume.add_argument(
        "--stats-interval", type=float, default=60.0, metavar="SECONDS", help="seconds between progress lines"
    )
    consume.add_argument(
        "--heartbeat-file", type=Path, metavar="PATH", help="touched every few seconds, for liveness probes"
    )
    consume.add_argument("--quiet", action="store_true", help="no summary line")
    store_option(consume)
    consume.set_defaults(run=run_consume)


def kafka_settings(settings: Settings, command: str) -> KafkaSettings:
    kafka = settings.kafka()
    if kafka is None:
        raise ConfigError(f"{command} needs Kafka: set ABUSEPIPE_KAFKA_BOOTSTRAP (host:port)")
    return kafka


def run_topics(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.topics import create_topics

    kafka = kafka_settings(settings, "topics create")
    for outcome in create_topics(kafka, partitions=args.partitions, replication=args.replication_factor):
        print(f"{outcome.topic}: {'created, ' if outcome.created else ''}{outcome.detail}")
    return EXIT_OK


def run_consume(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.consumer import ConsumerOptions, StoreConsumer
    from sinks.store import ReportStore

    kafka = kafka_settings(settings, "consume")
    if args.group:
        kafka = replace(kafka, group=args.group)
    if args.max_wait < 0:
        raise ConfigError("--max-wait: must not be negative")
    url = store_url(args, settings)
    store = with_listing_policy(ReportStore.open(url), settings)

    def log(text: str) -> None:
        if not args.quiet:
            say(text)

    try:
        options = ConsumerOptions(
            batch_records=args.batch,
            max_wait=args.max_wait,
            stats_interval=args.stats_interval,
            heartbeat_file=args.heartbeat_file,
        )
        consumer = StoreConsumer(kafka, store, options, log=log)
        try:
            with stop_on_signals() as stop:
                summary = consumer.run(stop)
        finally:
            consumer.close()
    finally:
        store.close()
    log(f"{summary.line()} into {display_url(url)} (group {kafka.group})")
    return EXIT_OK
