"""The `abusepipe` command. Bad input and bad arguments get one clear line, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import make_url

from abusepipe import __version__
from abusepipe.errors import AbusepipeError, ConfigError, ReportRejected
from abusepipe.output import FORMATS, render, table
from abusepipe.progress import ingest_progress
from abusepipe.settings import Settings
from ingest.checkpoint import Checkpoint
from ingest.imap import ImapIntake, ImapOptions, MailboxUnavailable, PassResult
from ingest.live import IntakeCounters, LiveIntake, MessageLog, message_id_of
from ingest.metrics import serve_metrics
from ingest.runner import DEFAULT_BATCH, ParseOptions, default_workers, ingest
from ingest.smtp import IntakeHandler, SmtpOptions, make_routes, serve, tls_context
from ingest.sources import PathSource, RawMessage, SourceError
from parsers import TrustPolicy, parse_message
from schemas import json_schema
from sinks.base import BatchSink
from sinks.consumer import ConsumerOptions, StoreConsumer
from sinks.kafka_config import BrokerUnavailable, KafkaSettings
from sinks.offenders import KINDS
from sinks.publisher import ReportPublisher
from sinks.queries import (
    dead_letter,
    dead_letters,
    offender_detail,
    parse_since,
    report_document,
    report_raw,
    top_offenders,
)
from sinks.store import ReportStore, StoredMessage, StoreUnavailable
from sinks.topics import create_topics

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_UNREADABLE = 1
EXIT_REJECTED = 2
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_TEMPFAIL = 75  # sysexits EX_TEMPFAIL: an MTA keeps the message and retries


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="abusepipe", description="Read abuse reports of every format and name the real sender."
    )
    parser.add_argument("--version", action="version", version=f"abusepipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    parse = commands.add_parser("parse", help="parse report mails and print one JSON report per line")
    parse.add_argument("files", nargs="+", metavar="FILE", help="mail files (.eml, .msg); - for stdin")
    parse.add_argument("--trap", action="store_true", help="each message is the junk itself (spam trap)")
    parse.add_argument(
        "--trusted-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="a network of your own relays, trusted in the Received walk (repeatable)",
    )
    commands.add_parser("schema", help="print the JSON Schema of a normalized report")

    ingest = commands.add_parser(
        "ingest", help="parse and store mail: files, directories, Maildir folders, mbox files; - for stdin"
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--trap", action="store_true", help="each message is the junk itself (spam trap)")
    ingest.add_argument("--trusted-network", action="append", default=[], metavar="CIDR")
    ingest.add_argument("--batch", type=_positive, default=DEFAULT_BATCH, help="messages per transaction")
    ingest.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="parser processes beside the writer (default: one per core; 0 parses in process)",
    )
    ingest.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="skip what an earlier run with this file acknowledged; record what this run does",
    )
    ingest.add_argument(
        "--log-messages",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one JSON line per message on stderr (default: on when reading stdin, as from an MTA)",
    )
    ingest.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    _store_option(ingest)

    topics = commands.add_parser("topics", help="Kafka topics of the pipeline")
    topic_commands = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = topic_commands.add_parser("create", help="create the missing topics (existing ones are kept)")
    create.add_argument("--partitions", type=_positive, default=6, help="partitions per topic (default 6)")
    create.add_argument(
        "--replication-factor", type=_positive, default=None, help="default: 3, or fewer brokers if fewer"
    )

    smtp = commands.add_parser(
        "smtp", help="receive reports over SMTP or LMTP for the configured abuse addresses (250 once durable)"
    )
    smtp.add_argument(
        "--listen", metavar="HOST:PORT", help="default: ABUSEPIPE_SMTP_LISTEN or 127.0.0.1:2525"
    )
    smtp.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="ADDRESS[=ROUTE]",
        help="an accepted address (repeatable); ROUTE: auto (default), trap, or a feedback type (fraud, ...)",
    )
    smtp.add_argument("--lmtp", action="store_true", help="speak LMTP (behind an MTA) instead of SMTP")
    smtp.add_argument("--max-size", type=_positive, metavar="BYTES", help="largest message (default 32 MiB)")
    smtp.add_argument("--tls-cert", type=Path, metavar="PEM", help="certificate chain for STARTTLS")
    smtp.add_argument("--tls-key", type=Path, metavar="PEM", help="private key for STARTTLS")
    smtp.add_argument("--require-starttls", action="store_true", help="refuse mail before STARTTLS")
    _live_intake_options(smtp)

    imap = commands.add_parser(
        "imap", help="read report mailboxes over IMAP; mark each message only once it is durable"
    )
    imap.add_argument("--host", help="IMAP server (default: ABUSEPIPE_IMAP_HOST)")
    imap.add_argument("--port", type=_positive, help="default: 993 for ssl, 143 otherwise")
    imap.add_argument("--security", choices=("ssl", "starttls", "plain"), help="default: ssl (IMAPS)")
    imap.add_argument("--user", help="login (default: ABUSEPIPE_IMAP_USERNAME)")
    imap.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="read the password here (else ABUSEPIPE_IMAP_PASSWORD)",
    )
    imap.add_argument("--ca-file", type=Path, metavar="PEM", help="CA certificates to verify the server with")
    imap.add_argument(
        "--folder", action="append", default=[], help="folder to read (repeatable; default INBOX)"
    )
    imap.add_argument(
        "--mark", choices=("move", "flag"), help="move done messages away (default) or flag them"
    )
    imap.add_argument("--processed-folder", help="where done messages go (default Processed)")
    imap.add_argument("--rejected-folder", help="where messages without a report go (default Rejected)")
    imap.add_argument("--poll-interval", type=float, metavar="SECONDS", help="between passes (default 60)")
    imap.add_argument("--no-idle", action="store_true", help="poll even where the server offers IDLE")
    imap.add_argument("--once", action="store_true", help="one pass over the folders, then exit")
    imap.add_argument("--trap", action="store_true", help="each message is the junk itself (spam trap)")
    _live_intake_options(imap)

    consume = commands.add_parser(
        "consume", help="store what is published to Kafka (a consumer group; run several to share the load)"
    )
    consume.add_argument("--group", help="consumer group (default: ABUSEPIPE_KAFKA_GROUP or abusepipe-store)")
    consume.add_argument("--batch", type=_positive, default=2000, help="most records per transaction")
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
    _store_option(consume)

    offenders = commands.add_parser("offenders", help="rank offending sources")
    offenders.add_argument("--by", required=True, choices=KINDS, help="offender kind")
    offenders.add_argument("--since", help="window: 24h, 7d, 2w, or a date (2026-11-01)")
    offenders.add_argument("--top", type=_positive, default=20)
    offenders.add_argument("--sort", choices=("reports", "reporters"), default="reports")
    offenders.add_argument("--format", choices=FORMATS, default="table")
    _store_option(offenders)

    offender = commands.add_parser("offender", help="one offender: totals, timeline, related keys, reports")
    offender.add_argument("kind", choices=KINDS)
    offender.add_argument("key")
    offender.add_argument("--days", type=_positive, default=30, help="timeline length in days")
    offender.add_argument("--format", choices=("table", "json"), default="table")
    _store_option(offender)

    report = commands.add_parser("report", help="one stored report, or its original bytes")
    report.add_argument("report_id")
    report.add_argument("--raw", action="store_true", help="print the original message bytes")
    _store_option(report)

    deadletter = commands.add_parser("deadletter", help="messages that yielded no report")
    dl_commands = deadletter.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl_list = dl_commands.add_parser("list", help="the latest dead letters")
    dl_list.add_argument("--limit", type=_positive, default=50)
    dl_list.add_argument("--format", choices=FORMATS, default="table")
    _store_option(dl_list)
    dl_show = dl_commands.add_parser("show", help="one dead letter: reason and raw bytes")
    dl_show.add_argument("id", type=int)
    dl_show.add_argument("--raw", action="store_true", help="print only the original message bytes")
    _store_option(dl_show)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _live_intake_options(parser: argparse.ArgumentParser) -> None:
    """What the long-running intakes (smtp, imap) share."""
    parser.add_argument("--trusted-network", action="append", default=[], metavar="CIDR")
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N", help="parser processes (default: cores)"
    )
    parser.add_argument("--metrics-listen", metavar="HOST:PORT", help="serve Prometheus counters at /metrics")
    parser.add_argument("--stats-interval", type=float, default=60.0, metavar="SECONDS")
    _store_option(parser)


def _trust(args: argparse.Namespace, settings: Settings) -> TrustPolicy:
    try:
        return TrustPolicy.from_cidrs([*settings.trusted_networks, *args.trusted_network])
    except ValueError as exc:
        raise ConfigError(f"--trusted-network: {exc}") from exc


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        metavar="URL",
        help="SQLAlchemy URL of the store (default: ABUSEPIPE_DATABASE_URL or SQLite)",
    )


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    if path.is_dir():
        raise OSError("is a directory")
    return path.read_bytes()


def _cmd_parse(args: argparse.Namespace, settings: Settings) -> int:
    trust = _trust(args, settings)
    limits = settings.parse_limits()
    rejected = 0
    out = sys.stdout
    for name in args.files:
        label = "<stdin>" if name == "-" else name
        try:
            raw = _read(name)
        except OSError as exc:
            rejected += 1
            print(f"{label}: rejected: cannot read: {exc.strerror or exc}", file=sys.stderr)
            continue
        try:
            reports = parse_message(
                raw, received_at=datetime.now(UTC), trap=args.trap, trust=trust, limits=limits
            )
        except ReportRejected as exc:
            rejected += 1
            print(f"{label}: rejected: {exc.reason}", file=sys.stderr)
            continue
        for report in reports:
            out.write(report.model_dump_json())
            out.write("\n")
        out.flush()
    return EXIT_REJECTED if rejected else EXIT_OK


def _cmd_schema(_: argparse.Namespace, __: Settings) -> int:
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def _store_url(args: argparse.Namespace, settings: Settings) -> str:
    url: str = args.database or settings.store_url()
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return url


def _display_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def _open_store(args: argparse.Namespace, settings: Settings) -> ReportStore:
    return ReportStore.open(_store_url(args, settings))


def _cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    trust = _trust(args, settings)
    options = ParseOptions(trap=args.trap, trust=trust, limits=settings.parse_limits())
    paths = PathSource(args.paths, max_bytes=options.limits.max_message_bytes)
    source: Iterable[RawMessage | SourceError] = paths
    workers = args.workers if args.workers is not None else default_workers()
    if args.paths == ["-"] or workers < 0:
        workers = 0  # one piped message: a process pool would only add start-up time
    sink, destination = _open_sink(args, settings)
    checkpoint: Checkpoint | None = None
    log_messages = args.log_messages if args.log_messages is not None else args.paths == ["-"]
    message_log = MessageLog("ingest")

    def acknowledged(batch: list[StoredMessage]) -> None:
        if checkpoint is not None:
            checkpoint.record(item.source for item in batch)
        if log_messages:
            for item in batch:
                message_log.message(
                    source=item.source,
                    message_id=message_id_of(item.raw),
                    outcome="stored" if item.prepared else "dead-lettered",
                    reports=len(item.prepared),
                    reason=item.rejection or "",
                )

    try:
        if args.checkpoint:
            checkpoint = Checkpoint(args.checkpoint)
            source = checkpoint.pending(source)
        show = not args.quiet and sys.stderr.isatty()
        # Sizing the bar walks every input once more: only when there is a bar.
        total = paths.total_bytes() if show else None
        with ingest_progress(enabled=show, total=total) as tick:
            summary = ingest(
                source,
                sink,
                options,
                batch_size=args.batch,
                workers=workers,
                on_progress=tick,
                on_acknowledged=acknowledged,
            )
    finally:
        sink.close()
        if checkpoint is not None:
            checkpoint.close()
    if isinstance(sink, ReportPublisher):
        summary.verb = "published"
    for error in summary.unreadable:
        print(f"{error.source}: cannot read: {error.reason}", file=sys.stderr)
    if not args.quiet:
        skipped = f"; {checkpoint.skipped} skipped (in the checkpoint)" if checkpoint else ""
        print(f"abusepipe: {summary.line()} into {destination}{skipped}", file=sys.stderr)
    return EXIT_UNREADABLE if summary.unreadable else EXIT_OK


def _kafka(settings: Settings, command: str) -> KafkaSettings:
    kafka = settings.kafka()
    if kafka is None:
        raise ConfigError(f"{command} needs Kafka: set ABUSEPIPE_KAFKA_BOOTSTRAP (host:port)")
    return kafka


def _cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    kafka = _kafka(settings, "topics create")
    for outcome in create_topics(kafka, partitions=args.partitions, replication=args.replication_factor):
        print(f"{outcome.topic}: {'created, ' if outcome.created else ''}{outcome.detail}")
    return EXIT_OK


def _cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    kafka = _kafka(settings, "consume")
    if args.group:
        kafka = replace(kafka, group=args.group)
    if args.max_wait < 0:
        raise ConfigError("--max-wait: must not be negative")
    url = _store_url(args, settings)
    store = ReportStore.open(url)

    def log(text: str) -> None:
        if not args.quiet:
            print(f"abusepipe: {text}", file=sys.stderr, flush=True)

    try:
        options = ConsumerOptions(
            batch_records=args.batch,
            max_wait=args.max_wait,
            stats_interval=args.stats_interval,
            heartbeat_file=args.heartbeat_file,
        )
        consumer = StoreConsumer(kafka, store, options, log=log)
        try:
            with _stop_on_signals() as stop:
                summary = consumer.run(stop)
        finally:
            consumer.close()
    finally:
        store.close()
    log(f"{summary.line()} into {_display_url(url)} (group {kafka.group})")
    return EXIT_OK


def _open_sink(args: argparse.Namespace, settings: Settings) -> tuple[BatchSink, str]:
    """Kafka when configured, else the store: the durable destination of every intake."""
    kafka = settings.kafka()
    if kafka is not None:
        return ReportPublisher(kafka), kafka.display()
    url = _store_url(args, settings)
    return ReportStore.open(url), _display_url(url)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT, for the long-running commands to stop cleanly."""
    stop = threading.Event()

    def request_stop(signum: int, _: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _listen_address(text: str, option: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"{option} {text!r}: port out of range")
    return host.strip("[]") or default_host, number


def _metrics_address(text: str) -> tuple[str, int]:
    return _listen_address(text, "--metrics-listen", default_host="127.0.0.1")


def _cmd_smtp(args: argparse.Namespace, settings: Settings) -> int:
    trust = _trust(args, settings)
    base = ParseOptions(trust=trust, limits=settings.parse_limits())
    recipients = dict(settings.smtp_recipients)
    for spec in args.recipient:
        address, _, route = spec.partition("=")
        recipients[address] = route or "auto"
    routes = make_routes(recipients, base)
    host, port = _listen_address(args.listen or settings.smtp_listen, "--listen")
    cert = args.tls_cert or settings.smtp_tls_cert
    key = args.tls_key or settings.smtp_tls_key
    if bool(cert) != bool(key):
        raise ConfigError("STARTTLS needs both --tls-cert and --tls-key")
    require_tls = args.require_starttls or settings.smtp_require_starttls
    if require_tls and not cert:
        raise ConfigError("--require-starttls needs --tls-cert and --tls-key")
    options = SmtpOptions(
        host=host,
        port=port,
        lmtp=args.lmtp,
        max_message_bytes=args.max_size or settings.max_message_bytes,
        hostname=settings.smtp_hostname,
        tls=tls_context(str(cert), str(key)) if cert and key else None,
        require_starttls=require_tls,
    )
    counters, log = IntakeCounters(), MessageLog("lmtp" if args.lmtp else "smtp")
    if args.metrics_listen:
        serve_metrics(_metrics_address(args.metrics_listen), log.intake, counters)
    sink, destination = _open_sink(args, settings)
    workers = args.workers if args.workers is not None else default_workers()
    intake = LiveIntake(sink, workers=max(0, workers))
    try:
        log.text(f"writing to {destination}")
        handler = IntakeHandler(intake, routes, counters, log, lmtp=args.lmtp)
        asyncio.run(serve(handler, options, stats_interval=args.stats_interval))
    finally:
        intake.close()
        sink.close()
    return EXIT_OK


def _imap_options(args: argparse.Namespace, settings: Settings) -> ImapOptions:
    host = args.host or settings.imap_host
    user = args.user or settings.imap_username
    if not host or not user:
        raise ConfigError(
            "imap needs a server and a login: --host and --user (or ABUSEPIPE_IMAP_HOST/_USERNAME)"
        )
    password = settings.imap_password
    if args.password_file:
        try:
            password = SecretStr(args.password_file.read_text().strip())
        except OSError as exc:
            raise ConfigError(f"--password-file: {exc.strerror or exc}") from exc
    if password is None:
        raise ConfigError("imap needs a password: ABUSEPIPE_IMAP_PASSWORD or --password-file")
    ca_file = args.ca_file or settings.imap_ca_file
    return ImapOptions(
        host=host,
        username=user,
        password=password,
        port=args.port or settings.imap_port,
        security=args.security or settings.imap_security,
        ca_file=str(ca_file) if ca_file else None,
        folders=tuple(args.folder) or settings.imap_folders,
        mark=args.mark or settings.imap_mark,
        processed_folder=args.processed_folder or settings.imap_processed_folder,
        rejected_folder=args.rejected_folder or settings.imap_rejected_folder,
        poll_interval=args.poll_interval or settings.imap_poll_interval,
        idle=settings.imap_idle and not args.no_idle,
        max_message_bytes=settings.max_message_bytes,
    )


def _cmd_imap(args: argparse.Namespace, settings: Settings) -> int:
    trust = _trust(args, settings)
    options = _imap_options(args, settings)
    parse_options = ParseOptions(trap=args.trap, trust=trust, limits=settings.parse_limits())
    counters, log = IntakeCounters(), MessageLog("imap")
    if args.metrics_listen:
        serve_metrics(_metrics_address(args.metrics_listen), "imap", counters)
    sink, destination = _open_sink(args, settings)
    workers = args.workers if args.workers is not None else default_workers()
    intake = LiveIntake(sink, workers=0 if args.once else max(0, workers))
    reader = ImapIntake(options, intake, parse_options, counters, log)
    try:
        log.text(
            f"reading {', '.join(options.folders)} at {options.host} as {options.username} into {destination}"
        )
        if args.once:
            result = reader.once()
            log.text(f"done: {counters.line()}")
            return EXIT_TEMPFAIL if result.retried else EXIT_OK
        last = [time.monotonic()]

        def on_pass(_: PassResult) -> None:
            if time.monotonic() - last[0] >= args.stats_interval:
                log.text(f"so far: {counters.line()}")
                last[0] = time.monotonic()

        with _stop_on_signals() as stop:
            reader.run(stop, on_pass=on_pass)
        log.text(f"stopped: {counters.line()}")
        return EXIT_OK
    finally:
        intake.close()
        sink.close()


def _cmd_offenders(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    since = parse_since(args.since, now)
    store = _open_store(args, settings)
    try:
        with store.connect() as connection:
            rows = top_offenders(connection, args.by, now=now, since=since, top=args.top, sort=args.sort)
    finally:
        store.close()
    columns = ["key", "reports", "reporters", "all_reports", "first_seen", "last_seen"]
    print(
        render(
            [asdict(row) for row in rows],
            columns if args.format == "table" else ["kind", *columns],
            args.format,
        )
    )
    return EXIT_OK


def _cmd_offender(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(args, settings)
    try:
        with store.connect() as connection:
            detail = offender_detail(connection, args.kind, args.key, now=datetime.now(UTC), days=args.days)
    finally:
        store.close()
    if detail is None:
        print(f"abusepipe: no reports for {args.kind} {args.key}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.format == "json":
        print(json.dumps(detail.as_dict(), indent=2, ensure_ascii=False))
        return EXIT_OK
    print(
        f"{detail.kind} {detail.key}: {detail.junk_reports} junk reports of {detail.reports}, "
        f"{detail.reporters} distinct reporters, first seen {detail.first_seen}, last seen {detail.last_seen}"
    )
    mix = ", ".join(f"{name} {n}" for name, n in detail.feedback_types.items() if n)
    print(f"feedback types: {mix or 'none'}")
    print("\ntimeline (junk / all reports per day):")
    print(table(detail.timeline, ["day", "reports", "all_reports"]))
    for kind, keys in detail.related.items():
        print(f"\nrelated {kind}: " + ", ".join(f"{k['key']} ({k['reports']})" for k in keys))
    print("\nlatest reports:")
    print(
        table(
            detail.latest_reports, ["seen_at", "report_id", "format", "feedback_type", "reporter", "subject"]
        )
    )
    return EXIT_OK


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(args, settings)
    try:
        with store.connect() as connection:
            found: object = (report_raw if args.raw else report_document)(connection, args.report_id)
            exists = found is not None or report_document(connection, args.report_id) is not None
    finally:
        store.close()
    if found is None and args.raw and exists:
        print(f"abusepipe: report {args.report_id}: its original bytes are not stored (yet)", file=sys.stderr)
        return EXIT_NOT_FOUND
    if found is None:
        print(f"abusepipe: no report {args.report_id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if isinstance(found, bytes):
        sys.stdout.buffer.write(found)
        sys.stdout.flush()
    else:
        print(json.dumps(found, indent=2, ensure_ascii=False))
    return EXIT_OK


def _cmd_deadletter(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(args, settings)
    try:
        with store.connect() as connection:
            if args.action == "list":
                letters = dead_letters(connection, limit=args.limit)
                columns = ["id", "received_at", "source", "reason", "size"]
                print(render([asdict(x) for x in letters], columns, args.format))
                return EXIT_OK
            found = dead_letter(connection, args.id)
    finally:
        store.close()
    if found is None:
        print(f"abusepipe: no dead letter {args.id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    letter, raw = found
    if not args.raw:
        print(
            f"dead letter {letter.id}: {letter.reason}\nsource: {letter.source}\n"
            f"received: {letter.received_at}\nsize: {letter.size} bytes, sha256 {letter.input_sha256}\n"
        )
        sys.stdout.flush()
    sys.stdout.buffer.write(raw)
    sys.stdout.flush()
    return EXIT_OK


COMMANDS = {
    "parse": _cmd_parse,
    "schema": _cmd_schema,
    "ingest": _cmd_ingest,
    "topics": _cmd_topics,
    "consume": _cmd_consume,
    "smtp": _cmd_smtp,
    "imap": _cmd_imap,
    "offenders": _cmd_offenders,
    "offender": _cmd_offender,
    "report": _cmd_report,
    "deadletter": _cmd_deadletter,
}


class _OneLineFormatter(logging.Formatter):
    """Libraries (SQLAlchemy's pool, kafka-python) log warnings with tracebacks; a user gets one line."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            text += f" ({type(error).__name__}: {error})"
        return f"abusepipe: {record.name}: {' '.join(text.split())[:500]}"


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    if not os.environ.get("ABUSEPIPE_DEBUG"):
        handler.setFormatter(_OneLineFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    # kafka-python logs an error on every failed connection attempt while a broker is away; abusepipe
    # itself reports what that means for the data (451, exit 75, "store unavailable ..." lines).
    logging.getLogger("kafka").setLevel(
        logging.DEBUG if os.environ.get("ABUSEPIPE_DEBUG") else logging.CRITICAL
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging()
    try:
        settings = Settings()
        return COMMANDS[args.command](args, settings)
    except SettingsError as exc:
        print(
            f"abusepipe: error: {' '.join(str(exc).split())} (a list or mapping setting takes JSON)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except ValidationError as exc:
        first = exc.errors()[0]
        print(
            f"abusepipe: error: setting {first['loc'][0] if first['loc'] else ''}: {first['msg']}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except (StoreUnavailable, BrokerUnavailable, MailboxUnavailable) as exc:
        print(f"abusepipe: error: {exc} (nothing was acknowledged; try again)", file=sys.stderr)
        return EXIT_TEMPFAIL
    except AbusepipeError as exc:
        print(f"abusepipe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    except BrokenPipeError:
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # last resort: a bug must still give one clear line, not a traceback
        if os.environ.get("ABUSEPIPE_DEBUG"):
            raise
        print(
            f"abusepipe: internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:300]});"
            " rerun with ABUSEPIPE_DEBUG=1 for details and please report it",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
