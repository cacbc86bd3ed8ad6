from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, make_url, select, text

from parsers import parse_message
from schemas import AbuseReport
from sinks.store import ReportStore

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "samples"
CORPUS = Path(os.environ.get("ABUSEPIPE_CORPUS", ROOT.parent / "shared" / "corpus"))
BULK = CORPUS.parent / "corpus-bulk" / "phishing_pot"


def parse(raw: bytes, **kwargs: object) -> list[AbuseReport]:
    return parse_message(raw, **kwargs)  # type: ignore[arg-type]


def one(raw: bytes, **kwargs: object) -> AbuseReport:
    reports = parse(raw, **kwargs)
    assert len(reports) == 1, [r.format for r in reports]
    return reports[0]


requires_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not present at {CORPUS}")
requires_bulk = pytest.mark.skipif(not BULK.is_dir(), reason=f"bulk corpus not present at {BULK}")


# --- stores: every store test runs on SQLite and on a real PostgreSQL ------------------------------------

POSTGRES_URL = os.environ.get("ABUSEPIPE_TEST_POSTGRES_URL")


def _postgres_database() -> Iterator[str]:
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: ABUSEPIPE_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL: set ABUSEPIPE_TEST_POSTGRES_URL (scripts/test starts one)")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def store(database_url: str) -> Iterator[ReportStore]:
    opened = ReportStore.open(database_url)
    try:
        yield opened
    finally:
        opened.close()


def count_rows(url: str, table: Any = None) -> int:
    """Rows of a store table (reports by default), read by a fresh connection as another process would."""
    from sinks import models as m

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(table if table is not None else m.reports)
                ).scalar_one()
            )
    finally:
        engine.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the test PostgreSQL."""
    yield from _postgres_database()


# --- Kafka: a real broker, started by scripts/test (scripts/kafka) -------------------------------------

KAFKA_BOOTSTRAP = os.environ.get("ABUSEPIPE_TEST_KAFKA_BOOTSTRAP")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    if not KAFKA_BOOTSTRAP:
        if os.environ.get("CI"):
            pytest.fail("CI must run the Kafka tests: ABUSEPIPE_TEST_KAFKA_BOOTSTRAP is not set")
        pytest.skip("no Kafka broker: set ABUSEPIPE_TEST_KAFKA_BOOTSTRAP (scripts/test starts one)")
    return KAFKA_BOOTSTRAP


# --- services of a test's own, to stop and start during the test ------------------------------------


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports nothing listens on now (a fixed or pid-derived choice
    collided with a cluster another run left behind)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65536:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError("no free consecutive ports")


class OwnService:
    """A service of a test's own (scripts/kafka, scripts/postgres on its own port and directory), to stop
    and start during the test without disturbing the others."""

    def __init__(self, script: str, env: dict[str, str], directory_variable: str) -> None:
        self._script = ROOT / "scripts" / script
        self._env = env
        self._directory = env[directory_variable]
        self.address = self("start")

    def __call__(self, action: str) -> str:
        done = subprocess.run(
            ["bash", str(self._script), action], env=self._env, capture_output=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode().strip()

    def remove(self) -> None:
        self("stop")
        subprocess.run(["rm", "-rf", self._directory], check=False)


@pytest.fixture
def own_broker() -> Iterator[OwnService]:
    directory = f"/tmp/abusepipe-kafka-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "ABUSEPIPE_KAFKA_PORT": str(free_ports(2)),  # the broker's port and, next to it, its controller's
        "ABUSEPIPE_KAFKA_DIR": directory,
    }
    broker = OwnService("kafka", env, "ABUSEPIPE_KAFKA_DIR")
    try:
        yield broker
    finally:
        broker.remove()


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, OwnService]]:
    directory = f"/tmp/abusepipe-pg-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ABUSEPIPE_PG_PORT": str(free_ports(1)), "ABUSEPIPE_PG_DIR": directory}
    cluster = OwnService("postgres", env, "ABUSEPIPE_PG_DIR")
    try:
        yield cluster.address, cluster
    finally:
        cluster.remove()


# --- IMAP: a real Dovecot, started by scripts/dovecot ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImapServer:
    host: str
    port: int
    tls_port: int
    user: str
    password: str
    ca_file: str
    oauth2_key_file: str
    """Base64 HS256 key with which Dovecot validates the JWTs of XOAUTH2/OAUTHBEARER logins."""


@pytest.fixture(scope="session")
def imap_server() -> ImapServer:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "dovecot"), "start"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the IMAP tests: scripts/dovecot start failed: {done.stderr.strip()}")
        pytest.skip(f"no Dovecot: {done.stderr.strip()}")
    host, port, tls_port, user, password, ca_file, oauth2_key = done.stdout.split()
    return ImapServer(host, int(port), int(tls_port), user, password, ca_file, oauth2_key)


@pytest.fixture(scope="session", autouse=True)
def _stop_warm_processes() -> Iterator[None]:
    """Tests pipe messages into `abusepipe ingest -` as an MTA does, which starts warm processes
    (`abusepipe.warm`): the ones this environment's commands share are stopped at the end, so that the
    suite leaves nothing running (the tests of warm start stop their own)."""
    yield
    from abusepipe.warm.client import ask
    from abusepipe.warm.protocol import Place

    for pythonpath in (os.environ.get("PYTHONPATH", ""), str(ROOT)):
        ask(Place.here({**os.environ, "PYTHONPATH": pythonpath}), "stop")
