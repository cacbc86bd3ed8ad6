"""The analyst's queries: `offenders`, `offender`, `report`, `deadletter list|show`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from abusepipe.cli.common import EXIT_NOT_FOUND, EXIT_OK, open_store, positive, say, store_option
from abusepipe.output import FORMATS, render, table
from sinks.kinds import KINDS

if TYPE_CHECKING:
    from abusepipe.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    offenders = commands.add_parser("offenders", help="rank offending sources")
    offenders.add_argument("--by", required=True, choices=KINDS, help="offender kind")
    offenders.add_argument("--since", help="window: 24h, 7d, 2w, or a date (2026-11-01)")
    offenders.add_argument("--top", type=positive, default=20)
    offenders.add_argument("--sort", choices=("reports", "reporters"), default="reports")
    offenders.add_argument(
        "--country",
        metavar="CC",
        help="only reports from sources in this country (needs ABUSEPIPE_COUNTRY_DB)",
    )
    offenders.add_argument("--format", choices=FORMATS, default="table")
    store_option(offenders)
    offenders.set_defaults(run=run_offenders)

    offender = commands.add_parser("offender", help="one offender: totals, timeline, related keys, reports")
    offender.add_argument("kind", choices=KINDS)
    offender.add_argument("key")
    offender.add_argument("--days", type=positive, default=30, help="timeline length in days")
    offender.add_argument("--format", choices=("table", "json"), default="table")
    store_option(offender)
    offender.set_defaults(run=run_offender)

    report = commands.add_parser("report", help="one stored report, or its original bytes")
    report.add_argument("report_id")
    report.add_argument("--raw", action="store_true", help="print the original message bytes")
    store_option(report)
    report.set_defaults(run=run_report)

    deadletter = commands.add_parser("deadletter", help="messages that yielded no report")
    dl_commands = deadletter.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl_list = dl_commands.add_parser("list", help="the latest dead letters")
    dl_list.add_argument("--limit", type=positive, default=50)
    dl_list.add_argument("--format", choices=FORMATS, default="table")
    store_option(dl_list)
    dl_list.set_defaults(run=run_deadletter_list)
    dl_show = dl_commands.add_parser("show", help="one dead letter: reason and raw bytes")
    dl_show.add_argument("id", type=int)
    dl_show.add_argument("--raw", action="store_true", help="print only the original message bytes")
    store_option(dl_show)
    dl_show.set_defaults(run=run_deadletter_show)


def run_offenders(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.queries import parse_since, top_offenders

    now = datetime.now(UTC)
    since = parse_since(args.since, now)
    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            rows = top_offenders(
                connection, args.by, now=now, since=since, top=args.top, sort=args.sort, country=args.country
            )
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


def run_offender(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.queries import offender_detail

    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            detail = offender_detail(connection, args.kind, args.key, now=datetime.now(UTC), days=args.days)
    finally:
        store.close()
    if detail is None:
        say(f"no reports for {args.kind} {args.key}")
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


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.queries import report_document, report_raw

    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            found: object = (report_raw if args.raw else report_document)(connection, args.report_id)
            exists = found is not None or report_document(connection, args.report_id) is not None
    finally:
        store.close()
    if found is None and args.raw and exists:
        say(f"report {args.report_id}: its original bytes are not stored (yet)")
        return EXIT_NOT_FOUND
    if found is None:
        say(f"no report {args.report_id}")
        return EXIT_NOT_FOUND
    if isinstance(found, bytes):
        sys.stdout.buffer.write(found)
        sys.stdout.flush()
    else:
        print(json.dumps(found, indent=2, ensure_ascii=False))
    return EXIT_OK


def run_deadletter_list(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.queries import dead_letters

    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            letters = dead_letters(connection, limit=args.limit)
    finally:
        store.close()
    columns = ["id", "received_at", "source", "reason", "size"]
    print(render([asdict(x) for x in letters], columns, args.format))
    return EXIT_OK


def run_deadletter_show(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.queries import dead_letter

    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            found = dead_letter(connection, args.id)
    finally:
        store.close()
    if found is None:
        say(f"no dead letter {args.id}")
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
