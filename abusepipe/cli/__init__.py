"""The `abusepipe` command. Bad input and bad arguments get one clear line, never a traceback.

An MTA runs `abusepipe ingest -` once per message, so this module decides one thing before importing
anything else: whether the command line is such a piped message, which the warm process
(`abusepipe.warm`) runs when one is there. Everything else, and every command when it is not, runs in
`app`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence  # loaded with the interpreter: typing alone would cost 2 ms


def main(argv: Sequence[str] | None = None) -> int:
    """The command; `argv` None: this process's own command line, the only one warm start may take
    (the process's standard streams are the command's)."""
    if argv is None and piped_message(sys.argv[1:]):
        code = _warm(sys.argv[1:])
        if code is not None:
            return code
    from abusepipe.cli.app import run  # see the module's docstring

    return run(argv)


def piped_message(argv: Sequence[str]) -> bool:
    """`abusepipe ingest ... -`: the message is on standard input, as from an MTA's pipe(8)."""
    return len(argv) > 1 and argv[0] == "ingest" and "-" in argv[1:]


def _warm(argv: list[str]) -> int | None:
    from abusepipe.warm.client import run_warm

    try:
        return run_warm(argv)
    except ValueError as exc:
        from abusepipe.cli.common import EXIT_USAGE  # only now: it imports argparse

        print(f"abusepipe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
