"""`abusepipe ingest`: files, directories, Maildir folders, mbox files or one piped message (an MTA's pipe)
into the store or Kafka.

One piped message is the MTA's path (one process per message): it parses in process and imports only
what that needs, since a process's start-up is most of its cost there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from abusepipe.cli.common import (
    EXIT_OK,
    EXIT_UNREADABLE,
    count,
    open_sink,
    positive,
    store_option,
    trust,
    trusted_network_option,
)
from ingest.defaults import DEFAULT_BATCH, default_workers

if TYPE_CHECKING:
    from abusepipe.settings import Settings
    from ingest.checkpoint import Checkpoint
    from ingest.sources import PathSource, RawMessage, SourceError
    from sinks.stored import StoredMessage


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = commands.add_parser(
        "ingest", help="parse and store mail: files, directories, Maildir folders, mbox files; - for stdin"
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--trap", action="store_true", help="each message is the junk itself (spam trap)")
    trusted_network_option(ingest)
    ingest.add_argument(
        "--batch",
        type=positive,
        default=DEFAULT_BATCH,
        help="messages per transaction (default: %(default)s)",
    )
    ingest.add_argument(
        "--workers",
        type=count,
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
    store_option(ingest)
    ingest.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.messagelog import MessageLog, message_id_of
    from ingest.runner import ParseOptions, ingest
    from ingest.sources import PathSource

    options = ParseOptions(
        trap=args.trap,
        trust=trust(args, settings),
        limits=settings.parse_limits(),
        enrichment=settings.enrichment(),
    )
    paths = PathSource(args.paths, max_bytes=options.limits.max_message_bytes)
    source: Iterable[RawMessage | SourceError] = paths
    piped = args.paths == ["-"]
    workers = args.workers if args.workers is not None else default_workers()
    if piped:
        workers = 0  # one piped message: a process pool would only add start-up time
    sink, destination = open_sink(args, settings)
    checkpoint: Checkpoint | None = None
    log_messages = args.log_messages if args.log_messages is not None else piped
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
            from ingest.checkpoint import Checkpoint

            checkpoint = Checkpoint(args.checkpoint)
            source = checkpoint.pending(source)
        show = not args.quiet and sys.stderr.isatty()
        with _progress(show, paths) as tick:
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
    if settings.kafka() is not None:
        summary.verb = "published"
    for error in summary.unreadable:
        print(f"{error.source}: cannot read: {error.reason}", file=sys.stderr)
    if not args.quiet:
        skipped = f"; {checkpoint.skipped} skipped (in the checkpoint)" if checkpoint else ""
        print(f"abusepipe: {summary.line()} into {destination}{skipped}", file=sys.stderr)
    return EXIT_UNREADABLE if summary.unreadable else EXIT_OK


def _progress(show: bool, paths: PathSource) -> AbstractContextManager[Callable[[int, int], None]]:
    """A progress bar on a terminal (rich is imported only then); a no-op otherwise."""
    if not show:
        return nullcontext(lambda messages, read: None)
    from abusepipe.progress import ingest_progress

    # Sizing the bar walks every input once more: only when there is a bar.
    return ingest_progress(enabled=True, total=paths.total_bytes())
