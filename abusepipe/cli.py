"""The `abusepipe` command. Bad input and bad arguments get one clear line, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from abusepipe import __version__
from abusepipe.errors import AbusepipeError, ConfigError, ReportRejected
from abusepipe.settings import Settings
from parsers import TrustPolicy, parse_message
from schemas import json_schema

EXIT_OK = 0
EXIT_REJECTED = 2
EXIT_USAGE = 2


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
    return parser


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    if path.is_dir():
        raise OSError("is a directory")
    return path.read_bytes()


def _cmd_parse(args: argparse.Namespace, settings: Settings) -> int:
    try:
        trust = TrustPolicy.from_cidrs([*settings.trusted_networks, *args.trusted_network])
    except ValueError as exc:
        raise ConfigError(f"--trusted-network: {exc}") from exc
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


COMMANDS = {"parse": _cmd_parse, "schema": _cmd_schema}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
        return COMMANDS[args.command](args, settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        print(
            f"abusepipe: error: setting {first['loc'][0] if first['loc'] else ''}: {first['msg']}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except AbusepipeError as exc:
        print(f"abusepipe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
