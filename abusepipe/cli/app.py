"""The `abusepipe` command line: the parser of every command group, logging, settings, and the one-line
errors. One module per command group (`parse`, `ingest`, `kafka`, `intake`, `query`, `web`, `blocklist`,
`portal`, `notify`); each adds its commands to the parser and names the function that runs each. Building
the parser imports nothing heavy, and a command imports only what it uses.
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import os
import sys
from collections.abc import Sequence

from abusepipe import __version__
from abusepipe.cli import blocklist, ingest, intake, kafka, notify, parse, portal, query, web
from abusepipe.cli.common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_TEMPFAIL, EXIT_USAGE
from abusepipe.cycle_collector import collect_less_often
from abusepipe.errors import AbusepipeError, ConfigError, Unavailable

GROUPS = (parse, ingest, kafka, intake, query, web, blocklist, portal, notify)


@functools.cache  # built once: the warm process builds it for every child it forks
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="abusepipe", description="Read abuse reports of every format and name the real sender."
    )
    parser.add_argument("--version", action="version", version=f"abusepipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(commands)
    return parser


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


def run(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    finally:
        # The interpreter's exit collects every object still tracked (SQLAlchemy, pydantic and the
        # parsers leave ~10^5 behind): frozen ones are skipped. 150-200 ms less for every command, which
        # is a third of a one-message `ingest -` from an MTA.
        gc.freeze()


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging()
    collect_less_often()
    try:
        return _run(args)
    except Unavailable as exc:
        print(f"abusepipe: error: {exc} (nothing was acknowledged; try again)", file=sys.stderr)
        return EXIT_TEMPFAIL
    except AbusepipeError as exc:
        print(f"abusepipe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    except BrokenPipeError:
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # last resort: a bug must still give one clear line, not a traceback
        if os.environ.get("ABUSEPIPE_DEBUG"):
            raise
        print(
            f"abusepipe: internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:300]});"
            " rerun with ABUSEPIPE_DEBUG=1 for details and please report it",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def _run(args: argparse.Namespace) -> int:
    """Settings are built here, once, after the arguments parsed (so `--help` never pays for them)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from abusepipe.settings import Settings

    try:
        settings = Settings()
    except SettingsError as exc:
        raise ConfigError(f"{' '.join(str(exc).split())} (a list or mapping setting takes JSON)") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"setting {first['loc'][0] if first['loc'] else ''}: {first['msg']}") from exc
    code: int = args.run(args, settings)
    return code
