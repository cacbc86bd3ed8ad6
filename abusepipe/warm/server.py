"""The warm process: imports what `ingest -` needs once, then forks one child per piped message.

Run by `abusepipe.warm.client.start_server`, never by hand. One process per place (its lock); it ends
after its idle time, on SIGTERM/SIGINT/SIGHUP, when its socket is removed or taken over, or when any
module it loaded changed on disk (it refuses the request that noticed, so that client runs cold).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from abusepipe.cli import main as command
from abusepipe.cli.common import EXIT_INTERRUPTED
from abusepipe.warm.protocol import (
    ACCEPTED,
    EXIT,
    FORWARDED,
    GO,
    REFUSED,
    SIGNAL,
    Place,
    encode,
    receive_exactly,
    receive_frame,
)

PRELOAD = (
    "abusepipe.cli.app",
    "abusepipe.settings",
    "ingest.runner",
    "ingest.sources",
    "ingest.messagelog",
    "sinks.store",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlite3",
    "blocklist.evaluator",
    "sinks.publisher",
)
"""What one piped message may need: the parse, the store (SQLite) and the publisher (Kafka). Whatever
else a command needs (a new store's migrations, PostgreSQL) its child imports as the cold path would."""
REQUEST_TIMEOUT = 5.0
TICK = 1.0
_PEERCRED = struct.Struct("3i")


def log(text: str) -> None:
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')} pid {os.getpid()}: {text}", file=sys.stderr)


class WarmServer:
    def __init__(self, place: Place, idle: float, lock: int) -> None:
        self.place = place
        self.idle = idle
        self.lock = lock
        """The lock this process holds while it runs: a child lets go of it, so that a child still
        running never keeps the next warm process from starting."""
        self.children: set[int] = set()
        self.served = 0
        self.started = time.time()
        self.last_request = time.monotonic()
        self.stopping = False
        self.files: dict[str, tuple[int, int]] = {}
        self.listener: socket.socket | None = None
        self.inode = 0
        self._wake_read, self._wake_write = os.pipe()

    # --- lifetime -------------------------------------------------------------------------------------

    def run(self) -> int:
        for module in PRELOAD:
            importlib.import_module(module)
        from abusepipe.cli.app import _parser  # noqa: PLC0415 - after its preload, by name

        _parser()  # argparse's 40 subcommands and their translated help: ~10 ms of every child
        self.files = loaded_files()
        self._listen()
        self._handle_signals()
        sys.stdout.flush()
        sys.stderr.flush()
        gc.collect()
        gc.freeze()  # the children share these pages instead of each collecting (and copying) them
        log(f"warm for {self.place.key}: {len(self.files)} modules loaded, idle time {self.idle:g}s")
        try:
            self._serve()
        finally:
            self._close()
        log(f"ended after {self.served} messages")
        return 0

    def _listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.place.socket)  # a dead warm process's: the lock says none runs
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.place.socket)
        os.chmod(self.place.socket, 0o600)
        listener.listen(64)
        self.inode = os.stat(self.place.socket).st_ino
        self.listener = listener

    def _handle_signals(self) -> None:
        os.set_blocking(self._wake_write, False)
        signal.set_wakeup_fd(self._wake_write)

        def stop(signum: int, _: FrameType | None) -> None:
            self.stopping = True

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, stop)

    def _serve(self) -> None:
        assert self.listener is not None
        while not self.stopping:
            listening = self.listener.fileno()
            ready, _, _ = select.select([listening, self._wake_read], [], [], TICK)
            self._reap()
            if self._wake_read in ready:
                os.read(self._wake_read, 512)
            if self.stopping or not self._socket_is_mine():
                break
            if listening in ready:
                conn, _ = self.listener.accept()
                with conn:
                    self._answer(conn)
                self.last_request = time.monotonic()
            elif not self.children and time.monotonic() - self.last_request > self.idle:
                break

    def _close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self._socket_is_mine():
            with contextlib.suppress(OSError):
                os.unlink(self.place.socket)
        for pid in list(self.children):  # a message in progress is finished, not abandoned
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()

    def _socket_is_mine(self) -> bool:
        try:
            return os.stat(self.place.socket).st_ino == self.inode
        except OSError:
            return False

    def _reap(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            self.children.discard(pid)

    # --- requests -------------------------------------------------------------------------------------

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(REQUEST_TIMEOUT)
        peer_credentials = getattr(socket, "SO_PEERCRED", None)  # Linux; elsewhere the directory's mode
        if peer_credentials is not None:
            credentials = conn.getsockopt(socket.SOL_SOCKET, peer_credentials, _PEERCRED.size)
            uid = _PEERCRED.unpack(credentials)[1]
            if uid != os.getuid():
                log(f"refused a connection of uid {uid}")
                return
        try:
            request = receive_frame(conn)
        except (OSError, ValueError) as exc:
            log(f"unreadable request: {exc}")
            return
        self._dispatch(conn, request)

    def _dispatch(self, conn: socket.socket, request: dict[str, Any]) -> None:
        what = request.get("what", "run")
        if what == "status":
            conn.sendall(encode(self.status()))
            return
        if what == "stop":
            self.stopping = True
            conn.sendall(encode({"stopping": True, **self.status()}))
            return
        changed = changed_file(self.files)
        if changed is not None:
            log(f"{changed} changed on disk: ending, the next message starts a fresh warm process")
            self.stopping = True
            conn.sendall(REFUSED)
            return
        if not _valid_run(request):
            conn.sendall(REFUSED)
            return
        pid = os.fork()
        if pid == 0:
            try:
                self._child(conn, request)
            finally:
                os._exit(70)
        self.children.add(pid)
        self.served += 1

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "key": self.place.key,
            "served": self.served,
            "running": sorted(self.children),
            "started": self.started,
            "idle_seconds": self.idle,
            "modules": len(self.files),
        }

    # --- in the child ---------------------------------------------------------------------------------

    def _child(self, conn: socket.socket, request: dict[str, Any]) -> None:
        """Become the command as its client started it, run it, and send back its exit status.

        The client's standard streams come with its go-ahead, not with the request: a client that gave
        up waiting never lends them (an MTA reading the command's output would otherwise wait for a
        warm process that holds them unread)."""
        assert self.listener is not None
        # The client's signals wait until its command runs: one taken before would end this child
        # outside the command's own answer to it (130 for Ctrl-C), or end it without an exit status.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        self.listener.close()
        signal.set_wakeup_fd(-1)
        for fd in (self._wake_read, self._wake_write, self.lock):
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        conn.settimeout(None)
        try:
            os.chdir(request["cwd"])
        except OSError:
            conn.sendall(REFUSED)  # its client runs cold, from where it is
            return
        conn.sendall(ACCEPTED)
        go, fds, _, _ = socket.recv_fds(conn, 1, 3)
        if go != GO or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            return  # its client gave up waiting and runs the command itself
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        os.umask(request["umask"])
        argv = [str(arg) for arg in request["argv"]]
        sys.argv = ["abusepipe", *argv]
        done = threading.Event()
        threading.Thread(
            target=_follow_client, args=(conn, done), name="abusepipe-warm-client", daemon=True
        ).start()
        code = _run_command(argv)
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        done.set()
        with contextlib.suppress(OSError):
            conn.sendall(EXIT + bytes([code]))
        os._exit(code)


def _valid_run(request: dict[str, Any]) -> bool:
    return (
        isinstance(request.get("argv"), list)
        and isinstance(request.get("cwd"), str)
        and isinstance(request.get("env"), dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items())
        and isinstance(request.get("umask"), int)
    )


def _run_command(argv: list[str]) -> int:
    """The command's exit status; the client's signals reach it only while it runs."""
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # runs the handler of one held back
        code: object = command(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:  # before the command's own handler was there: its answer all the same
        code = EXIT_INTERRUPTED
    except BaseException:  # the cold path's interpreter would print it: so does this one
        traceback.print_exc()
        code = 1
    finally:
        _hold_signals()
    return code & 0xFF if isinstance(code, int) else 1


def _hold_signals() -> None:
    """Block the passed-on signals; one that came after the command ended is too late to change its
    exit status (pthread_sigmask runs the pending handler, hence the retry)."""
    while True:
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        except KeyboardInterrupt:
            continue
        return


def _follow_client(conn: socket.socket, done: threading.Event) -> None:
    """The client's signals, passed on; its death (the connection closing) kills this child, as killing
    the command would have in one process."""
    while True:
        try:
            data = receive_exactly(conn, 2)
        except (OSError, ValueError):  # closed: the client is gone
            if not done.is_set():
                os.kill(os.getpid(), signal.SIGKILL)
            return
        if data[:1] == SIGNAL:
            # To the main thread, as the client's own kernel would have: it interrupts the read of the
            # message there, and Python runs signal handlers in that thread.
            signal.pthread_kill(threading.main_thread().ident or 0, data[1])


def loaded_files() -> dict[str, tuple[int, int]]:
    """Every module file loaded, with its stamp."""
    files = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and (stamp := _stamp(path)) is not None:
            files[path] = stamp
    return files


def changed_file(files: dict[str, tuple[int, int]]) -> str | None:
    """The first of `files` whose stamp is not the one recorded (or that is gone)."""
    return next((path for path, stamp in files.items() if _stamp(path) != stamp), None)


def _stamp(path: str) -> tuple[int, int] | None:
    """Modification time and size: what an edit or an upgrade changes."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def main(argv: list[str]) -> int:
    """`SOCKET IDLE_SECONDS`, as the client starts it (the socket's path shows in `ps`)."""
    os.closerange(3, 65536)  # nothing the starting command had open is held beyond it
    os.chdir("/")
    socket_path, idle = argv[0], float(argv[1])
    place = Place(os.path.dirname(socket_path), os.path.basename(socket_path).removesuffix(".sock"))
    lock = place.take_lock()
    if lock is None:
        return 0  # another warm process for this place is starting or running
    try:
        return WarmServer(place, idle, lock).run()
    except Exception as exc:  # logged: nobody waits for this process's exit status
        log(f"failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1
