"""A command imports only what it uses: `--help` and `parse` no Kafka, IMAP, SMTP, SQL or Alembic stack;
the MTA pipe (`ingest -` into an existing store) no Alembic, Kafka, IMAP, SMTP, PostgreSQL or progress bar.
Each command runs in a fresh interpreter, as a user starts it, and reports what it had imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SAMPLES

# Runs `abusepipe ARGS...` with stdin, then prints the names of the modules it imported as a JSON list.
PROBE = """
import json, sys
from abusepipe.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
print("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""

NEVER = (
    "kafka", "imapclient", "aiosmtpd", "alembic", "prometheus_client", "tldextract", "requests", "rich",
    "fastapi", "starlette", "uvicorn", "jinja2", "httpx", "msal", "selenium", "defusedxml",
)  # fmt: skip


def imported(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")},
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        },
    )
    out = done.stdout.decode()
    assert "MODULES " in out, done.stderr.decode()
    return set(json.loads(out.rsplit("MODULES ", 1)[1]))


def heavy(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in packages)


def test_help_imports_no_stack() -> None:
    modules = imported("--help")
    assert heavy(modules, (*NEVER, "sqlalchemy", "pydantic", "flanker", "parsers", "schemas")) == []
    assert sorted(m for m in modules if m.startswith("sinks.")) == ["sinks.kinds"]


def test_parse_imports_no_store_kafka_imap_or_smtp() -> None:
    modules = imported("parse", str(SAMPLES / "flanker_fbl_aol.eml"))
    assert "parsers.api" in modules  # it did parse
    assert heavy(modules, (*NEVER, "sqlalchemy", "pg8000")) == []


def test_the_mta_pipe_into_an_existing_store_imports_only_what_one_message_needs(tmp_path: Path) -> None:
    env = {"ABUSEPIPE_DATA_DIR": str(tmp_path)}
    raw = (SAMPLES / "flanker_fbl_aol.eml").read_bytes()
    first = imported("ingest", "--quiet", "-", stdin=raw, env=env)
    assert "alembic" in first  # a new store is migrated (the guard below can fail)
    modules = imported("ingest", "--quiet", "-", stdin=b"X-Copy: 2\r\n" + raw, env=env)
    assert "sinks.store" in modules  # it did store
    assert heavy(modules, (*NEVER, "pg8000", "multiprocessing")) == []
    assert "sqlalchemy.dialects.postgresql" not in modules


def test_the_pipe_into_kafka_needs_no_sql() -> None:
    # What `ingest -` runs when Kafka is the sink: parsing, the message rows, the publisher; the store's
    # SQL stack (~150 ms of every piped message) belongs to the consumer.
    probe = (
        "import json, sys, ingest.runner, sinks.publisher, sinks.wire; print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    modules = set(json.loads(done.stdout))
    assert "kafka" in modules and "sinks.stored" in modules
    assert heavy(modules, ("sqlalchemy", "pg8000", "alembic")) == []
