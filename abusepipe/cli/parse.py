"""`abusepipe parse` and `abusepipe schema`: reports as JSON, without a store."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from abusepipe.cli.common import EXIT_OK, EXIT_REJECTED, trust, trusted_network_option
from abusepipe.errors import ReportRejected

if TYPE_CHECKING:
    from abusepipe.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parse = commands.add_parser("parse", help="parse report mails and print one JSON report per line")
    parse.add_argument("files", nargs="+", metavar="FILE", help="mail files (.eml, .msg); - for stdin")
    parse.add_argument("--trap", action="store_true", help="each message is the junk itself (spam trap)")
    trusted_network_option(parse)
    parse.set_defaults(run=run_parse)
    schema = commands.add_parser("schema", help="print the JSON Schema of a normalized report")
    schema.set_defaults(run=run_schema)


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except IsADirectoryError:
        raise OSError("is a directory") from None


def run_parse(args: argparse.Namespace, settings: Settings) -> int:
    from parsers.api import parse_message

    policy = trust(args, settings)
    limits = settings.parse_limits()
    enrichment = settings.enrichment()
    if enrichment is not None:
        from ingest.enrich import enricher_for

        enrich = enricher_for(enrichment).enrich
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
                raw, received_at=datetime.now(UTC), trap=args.trap, trust=policy, limits=limits
            )
        except ReportRejected as exc:
            rejected += 1
            print(f"{label}: rejected: {exc.reason}", file=sys.stderr)
            continue
        for report in reports:
            if enrichment is not None:
                report = enrich(report)  # noqa: PLW2901 (the enriched report is the one printed)
            out.write(report.model_dump_json())
            out.write("\n")
        out.flush()
    return EXIT_REJECTED if rejected else EXIT_OK


def run_schema(_: argparse.Namespace, __: Settings) -> int:
    from schemas import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK
