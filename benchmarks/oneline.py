"""A benchmark's errors as one line: a broker or database it cannot reach is a usage problem, not a
traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from kafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from abusepipe.errors import AbusepipeError


def run_main(main: Callable[[], None]) -> None:
    try:
        main()
    except (AbusepipeError, SQLAlchemyError, KafkaError) as exc:
        cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's own text adds a link and the statement
        sys.exit(f"{Path(sys.argv[0]).name}: {' '.join(str(cause).split())[:300]}")
