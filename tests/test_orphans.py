"""No process outlives its command: the parser workers of `smtp`, `imap` and `ingest` end when the command
is SIGKILLed (as the OOM killer or `kill -9` does), and a worker obeys SIGTERM.

Each command runs in a session of its own, so its processes are exactly those of its process group."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, ImapServer
from tests.mail import arf, junk, many_reports
from tests.procfs import stat_fields

CMD = [sys.executable, "-m", "abusepipe.cli"]


def group_members(group: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        fields = stat_fields(entry.name) if entry.name.isdigit() else None
        if fields is not None and int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def wait_for(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def env(**extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")},
        "PYTHONPATH": str(ROOT),
        **extra,
    }


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:  # whatever a failed test left: the whole group
        for pid in group_members(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.wait()


def start(
    processes: list[subprocess.Popen[bytes]], args: list[str], log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [*CMD, *args], stderr=handle, stdout=subprocess.DEVNULL, env=env(**extra), start_new_session=True
        )
    processes.append(process)
    return process


def killed_leaves_nothing(process: subprocess.Popen[bytes], workers: int) -> None:
    wait_for(lambda: len(group_members(process.pid)) >= 1 + workers, "the parser workers never started")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    wait_for(lambda: not group_members(process.pid), "parser workers outlived their command", timeout=10)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_smtp(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = tmp_path / "smtp.log"
    process = start(
        processes,
        ["smtp", "--listen", f"127.0.0.1:{port}", "--recipient", "abuse@example.net", "--workers", "2",
         "--database", f"sqlite:///{tmp_path / 'store.sqlite3'}"],
        log,
    )  # fmt: skip
    wait_for(lambda: "listening on" in log.read_text(), f"smtp did not start: {log.read_text()}")
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:  # the workers start with the first message
        client.sendmail("a@example.org", ["abuse@example.net"], arf("abuse", junk()).replace(b"\n", b"\r\n"))
    return process, port


def test_smtp_workers_end_with_a_killed_intake(
    started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    process, _ = start_smtp(started, tmp_path)
    killed_leaves_nothing(process, workers=2)


def test_a_parser_worker_obeys_sigterm(started: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    process, port = start_smtp(started, tmp_path)
    wait_for(lambda: len(group_members(process.pid)) >= 3, "the parser workers never started")
    worker = max(pid for pid in group_members(process.pid) if pid != process.pid)
    os.kill(worker, signal.SIGTERM)
    wait_for(lambda: worker not in group_members(process.pid), "a worker ignored SIGTERM", timeout=10)
    # The intake replaces its pool and goes on (the message in the dead worker, if any, gets a 451).
    deadline = time.monotonic() + 60
    while True:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            try:
                client.sendmail("a@example.org", ["abuse@example.net"], junk(extra=[("X-N", "2")]))
                break
            except smtplib.SMTPDataError as error:
                assert error.smtp_code == 451 and time.monotonic() < deadline
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    wait_for(lambda: not group_members(process.pid), "workers outlived a stopped intake", timeout=10)


def test_ingest_workers_end_with_a_killed_ingest(
    started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    for index, raw in enumerate(many_reports(3000)):
        (spool / f"{index}.eml").write_bytes(raw)
    process = start(
        started,
        [
            "ingest",
            "--workers",
            "2",
            "--batch",
            "50",
            "--database",
            f"sqlite:///{tmp_path / 's.sqlite3'}",
            str(spool),
        ],
        tmp_path / "ingest.log",
    )
    killed_leaves_nothing(process, workers=2)


@pytest.mark.integration
def test_imap_workers_end_with_a_killed_intake(
    started: list[subprocess.Popen[bytes]], tmp_path: Path, imap_server: ImapServer
) -> None:
    from tests.test_imap import Mailbox

    mailbox = Mailbox(imap_server)
    mailbox.append(*many_reports(2))
    log = tmp_path / "imap.log"
    process = start(
        started,
        [
            *mailbox.args("--workers", "2", "--poll-interval", "600"),
            "--database",
            f"sqlite:///{tmp_path / 's.sqlite3'}",
        ],
        log,
        ABUSEPIPE_IMAP_PASSWORD=imap_server.password,
    )
    wait_for(lambda: mailbox.count(mailbox.processed) == 2, f"imap processed nothing: {log.read_text()}")
    killed_leaves_nothing(process, workers=2)


def test_portal_workers_end_with_a_killed_portal(
    started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """uvicorn's workers serve on the socket of their supervisor (`abusepipe portal`): orphaned, they went
    on answering on its port, so that a restarted portal could not listen there."""
    port = free_port()
    log = tmp_path / "portal.log"
    process = start(
        started,
        ["portal", "--listen", f"127.0.0.1:{port}", "--workers", "2",
         "--database", f"sqlite:///{tmp_path / 's.sqlite3'}"],
        log,
        ABUSEPIPE_PORTAL_URL=f"http://127.0.0.1:{port}/",
        ABUSEPIPE_MAIL_FROM="delist@example.net",
    )  # fmt: skip

    def serving() -> bool:
        assert process.poll() is None, f"the portal ended: {log.read_text()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(serving, f"the portal never answered: {log.read_text()}")
    killed_leaves_nothing(process, workers=2)
    with socket.socket() as again:  # nothing listens there any more: the next portal can
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does (TIME_WAIT)
        again.bind(("127.0.0.1", port))
        again.listen()
