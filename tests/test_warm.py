"""Warm start of the MTA pipe (`abusepipe.warm`), with real processes as an MTA runs them: the first piped
message starts the warm process, later ones are run by its children; the answers (exit status, output,
what is stored) are the cold path's; a killed or signalled client takes its child with it; the warm
process ends when idle, when told, and when its code changed; nothing is left running."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from abusepipe.warm.client import ask
from abusepipe.warm.protocol import FORWARDED, Place
from tests.conftest import ROOT, SAMPLES
from tests.procfs import stat_fields, zombie

CMD = [sys.executable, "-m", "abusepipe.cli"]
RAW = (SAMPLES / "flanker_fbl_aol.eml").read_bytes()


class Desk:
    """One data directory and one place for warm processes, as one MTA user has."""

    def __init__(self, tmp_path: Path, idle: str) -> None:
        self.root = tmp_path
        run = tempfile.mkdtemp(prefix="apw-", dir="/tmp")  # pytest's own paths are too long for a socket
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")},
            "PYTHONPATH": str(ROOT),
            "XDG_RUNTIME_DIR": run,
            "ABUSEPIPE_DATA_DIR": str(tmp_path / "data"),
            "ABUSEPIPE_WARM_SECONDS": idle,
        }
        self.place = Place.here(self.env)
        assert self.place.directory.startswith(run)
        self.count = 0

    def message(self) -> bytes:
        self.count += 1
        return f"X-Copy: {self.count}-{time.time_ns()}\r\n".encode() + RAW

    def pipe(self, raw: bytes, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*CMD, "ingest", *args, "-"],
            input=raw,
            capture_output=True,
            timeout=120,
            check=False,
            env={**self.env, **env},
            cwd=self.root,
        )

    def start(self, raw: bytes) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*CMD, "ingest", "--quiet", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.root,
        )

    def status(self) -> dict[str, object] | None:
        return ask(self.place, "status")

    def wait_warm(self, timeout: float = 60) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.status()
            if answer is not None:
                return answer
            time.sleep(0.05)
        log = Path(self.place.log)
        raise AssertionError(f"no warm process: {log.read_text() if log.exists() else 'no log'}")

    def reports(self) -> int:
        with sqlite3.connect(self.root / "data" / "abusepipe.sqlite3") as db:
            (count,) = db.execute("SELECT count(*) FROM reports").fetchone()
        return int(count)

    def stop(self) -> None:
        answer = ask(self.place, "stop")
        if answer is not None:
            assert wait_gone(int(str(answer["pid"])))
        shutil.rmtree(self.env["XDG_RUNTIME_DIR"])


def timeless(text: bytes) -> bytes:
    return re.sub(rb"in [0-9.]+s \([0-9]+ messages/s\)", b"in Xs (X messages/s)", text)


def wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if zombie(pid):
            return True
        time.sleep(0.05)
    return False


def running(pid: int, timeout: float = 30) -> list[int]:
    """The children the warm process `pid` runs, once it runs one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        alive = [child for child in children if not zombie(child)]  # an earlier one, not reaped yet
        if alive:
            return alive
        time.sleep(0.05)
    raise AssertionError("the warm process started no child")


def processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in command and not zombie(int(entry.name)):
                found.append(int(entry.name))
    return found


@pytest.fixture
def open_desk(tmp_path: Path) -> Iterator[Callable[[str], Desk]]:
    """A desk with the given idle seconds; stopped afterwards, and nothing of it may be left running."""
    opened: list[Desk] = []

    def open_one(idle: str) -> Desk:
        opened.append(Desk(tmp_path, idle))
        return opened[-1]

    yield open_one
    for desk in opened:
        desk.stop()
        assert processes_with(desk.place.socket) == []


@pytest.fixture
def desk(open_desk: Callable[[str], Desk]) -> Desk:
    return open_desk("30")


def test_piped_messages_after_the_first_are_run_by_the_warm_process(desk: Desk) -> None:
    first = desk.start(b"")
    message = desk.message()
    assert first.stdin is not None
    first.stdin.write(message[:300])  # the first message runs cold, and waits here for the rest
    first.stdin.flush()
    status = desk.wait_warm()
    assert status["served"] == 0
    warm = int(str(status["pid"]))
    fields = stat_fields(warm)
    assert fields is not None
    parent = int(fields[1])
    assert parent != first.pid and os.getsid(warm) != os.getsid(first.pid)  # not part of the command
    _, err = first.communicate(message[300:], timeout=120)
    assert first.returncode == 0, err.decode()
    for _ in range(3):
        done = desk.pipe(desk.message())
        assert done.returncode == 0, done.stderr.decode()
        assert b'"outcome": "stored"' in done.stderr
        assert b"1 messages: 1 reports stored" in done.stderr
    status = desk.wait_warm()
    assert status["served"] == 3
    assert status["running"] == []
    assert desk.reports() == 4
    for _ in range(2):
        assert desk.pipe(RAW, "--quiet").returncode == 0
    assert desk.reports() == 5  # the same report twice is one report, warm as cold


def test_the_warm_process_answers_as_the_cold_command(desk: Desk) -> None:
    desk.pipe(desk.message(), "--quiet")
    desk.wait_warm()
    quiet = ["--quiet", "--no-log-messages"]
    cases: list[tuple[bytes, list[str], dict[str, str]]] = [
        (desk.message(), quiet, {}),
        (b"Subject: hello\r\n\r\nnot a report\r\n", ["--no-log-messages"], {}),
        (desk.message(), ["--batch", "0"], {}),  # a bad argument
        (desk.message(), quiet, {"ABUSEPIPE_DATABASE_URL": "postgresql+pg8000://nobody@127.0.0.1:1/none"}),
        (desk.message(), quiet, {"ABUSEPIPE_MAX_MESSAGE_BYTES": "many"}),  # a bad setting
    ]
    for raw, args, env in cases:
        warm = desk.pipe(raw, *args, **env)
        cold = desk.pipe(raw, *args, **env, ABUSEPIPE_WARM_SECONDS="0")
        assert (warm.returncode, warm.stdout, timeless(warm.stderr)) == (
            cold.returncode,
            cold.stdout,
            timeless(cold.stderr),
        )
        assert b"Traceback" not in warm.stderr
    codes = [desk.pipe(raw, *args, **env).returncode for raw, args, env in cases]
    assert codes == [0, 0, 2, 75, 2]
    assert desk.wait_warm()["served"] == 2 * len(cases)


def test_killing_the_client_kills_the_child_running_its_message(desk: Desk) -> None:
    desk.pipe(desk.message(), "--quiet")
    server = int(str(desk.wait_warm()["pid"]))
    before = desk.reports()
    for kill, expected in ((signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, -signal.SIGTERM)):
        client = desk.start(b"")
        assert client.stdin is not None
        client.stdin.write(desk.message()[:300])  # half a message: its child waits for the rest
        client.stdin.flush()
        (child,) = running(server)
        client.send_signal(kill)
        assert client.wait(timeout=30) == expected
        assert wait_gone(child), f"child {child} outlived its client ({kill.name})"
        for stream in (client.stdin, client.stdout, client.stderr):
            assert stream is not None
            stream.close()
    assert desk.reports() == before  # nothing half-stored
    client = desk.start(b"")
    assert client.stdin is not None
    client.stdin.write(desk.message()[:300])
    client.stdin.flush()
    running(server)
    client.send_signal(signal.SIGINT)  # Ctrl-C: the command's own answer to it, as cold
    _, err = client.communicate(timeout=30)
    assert client.returncode == 130, err.decode()
    assert desk.reports() == before


def test_a_signal_passed_on_before_the_command_runs_gets_the_commands_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Ctrl-C passed on while the child still prepares waits for the command: 130, as the command
    answers it, not a child ended without an exit status; one that comes after it ended is dropped."""
    from abusepipe.warm import server

    ran: list[list[str]] = []

    def command(argv: list[str]) -> int:
        ran.append(argv)
        time.sleep(0.5)  # the signal interrupts the command, as it would cold
        return 0

    monkeypatch.setattr(server, "command", command)
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # as the child does first
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        assert server._run_command(["ingest", "-"]) == 130
        assert ran == [], "the command ran although Ctrl-C came first"
        assert server._run_command(["ingest", "-"]) == 0
        assert ran == [["ingest", "-"]]
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)  # after it: too late
        assert signal.SIGINT in signal.sigpending()  # held, not raised (the child exits with 0)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        signal.signal(signal.SIGINT, previous)


def test_concurrent_first_messages_start_one_warm_process(desk: Desk) -> None:
    clients = [desk.start(b"") for _ in range(4)]
    for client in clients:
        _, err = client.communicate(desk.message(), timeout=120)
        assert client.returncode == 0, err.decode()
    desk.wait_warm()
    time.sleep(1)  # a second warm process, had one started, would be listening by now
    assert len(processes_with(desk.place.socket)) == 1
    assert Path(desk.place.log).read_text().count(": warm for ") == 1  # the others ended at its lock
    assert desk.reports() == 4


def test_the_warm_process_ends_when_idle(open_desk: Callable[[str], Desk]) -> None:
    desk = open_desk("1")
    desk.pipe(desk.message(), "--quiet")
    pid = int(str(desk.wait_warm()["pid"]))
    assert desk.pipe(desk.message(), "--quiet").returncode == 0
    assert wait_gone(pid, timeout=20)
    # Had that message come after its idle second (a slow machine), it ran cold and started another
    # warm process: that one ends the same way.
    for other in processes_with(desk.place.socket):
        assert wait_gone(other, timeout=20), f"warm process {other} outlived its idle time"
    assert not os.path.exists(desk.place.socket)
    assert desk.reports() == 2


def test_the_warm_process_ends_when_its_code_changed(desk: Desk) -> None:
    desk.pipe(desk.message(), "--quiet")
    pid = int(str(desk.wait_warm()["pid"]))
    module = ROOT / "ingest" / "runner.py"
    before = module.stat()
    try:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        done = desk.pipe(desk.message(), "--quiet")  # refused by the stale process: run cold
        assert done.returncode == 0, done.stderr.decode()
        assert wait_gone(pid)
        desk.pipe(desk.message(), "--quiet")
        fresh = desk.wait_warm()
    finally:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert fresh["pid"] != pid and fresh["served"] == 0
    assert "ingest/runner.py changed on disk" in Path(desk.place.log).read_text()
    assert desk.reports() == 3


def test_warm_start_can_be_turned_off_and_rejects_a_bad_setting(open_desk: Callable[[str], Desk]) -> None:
    desk = open_desk("0")
    for _ in range(2):
        assert desk.pipe(desk.message(), "--quiet").returncode == 0
    assert not os.path.exists(desk.place.directory)
    bad = desk.pipe(desk.message(), "--quiet", ABUSEPIPE_WARM_SECONDS="soon")
    assert bad.returncode == 2
    assert bad.stderr.decode().splitlines() == [
        "abusepipe: error: ABUSEPIPE_WARM_SECONDS='soon': expected seconds from 0 (off) to 86400"
    ]
    assert desk.reports() == 2


def test_a_directory_others_can_enter_is_not_used(desk: Desk) -> None:
    os.makedirs(desk.place.directory, mode=0o755)
    os.chmod(desk.place.directory, 0o755)
    done = desk.pipe(desk.message(), "--quiet", "--no-log-messages")
    assert done.returncode == 0
    assert done.stderr.decode().splitlines() == [
        f"abusepipe: warm start off: {desk.place.directory} is not a directory private to this user"
    ]
    assert os.listdir(desk.place.directory) == []
    assert desk.reports() == 1


def test_a_message_handed_to_the_warm_process_loads_nothing_heavy(desk: Desk) -> None:
    desk.pipe(desk.message(), "--quiet")
    desk.wait_warm()
    probe = (
        "import json, sys\n"
        "from abusepipe.cli import main\n"
        "sys.argv = ['abusepipe', 'ingest', '--quiet', '--no-log-messages', '-']\n"
        "code = main()\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        input=desk.message(),
        capture_output=True,
        timeout=120,
        check=False,
        env=desk.env,
        cwd=desk.root,
    )
    code, modules = json.loads(done.stdout)
    assert code == 0, done.stderr.decode()
    assert desk.wait_warm()["served"] == 1  # the probe's message was the warm process's
    heavy = (
        "pydantic",
        "sqlalchemy",
        "parsers",
        "sinks",
        "schemas",
        "ingest",
        "kafka",
        "argparse",
        "logging",
    )
    assert sorted(m for m in modules if m.split(".")[0] in heavy) == []
    assert desk.reports() == 2


def test_a_client_that_gave_up_waiting_runs_cold_and_no_child_reads_its_message(desk: Desk) -> None:
    desk.pipe(desk.message(), "--quiet")
    server = int(str(desk.wait_warm()["pid"]))
    os.kill(server, signal.SIGSTOP)  # a warm process that does not answer
    try:
        began = time.monotonic()
        done = desk.pipe(desk.message(), "--quiet", "--no-log-messages")
        waited = time.monotonic() - began
    finally:
        os.kill(server, signal.SIGCONT)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    assert waited >= 10  # the answer timeout, then the cold run
    deadline = time.monotonic() + 30
    while (status := desk.wait_warm())["served"] != 1 or status["running"]:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert desk.reports() == 2  # stored once, whole (the late child never read it)
    with sqlite3.connect(desk.root / "data" / "abusepipe.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM deadletters").fetchone() == (0,)
