"""The short-lived side of warm start: hand a piped message's command to the warm process, or start one.

Cheap modules of the stdlib only (no pathlib, contextlib, typing or json): the client's whole cost is the
interpreter's start-up and a round trip; a miss costs a connect().
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from types import FrameType

from abusepipe.warm.protocol import (
    ACCEPTED,
    EXIT,
    FORWARDED,
    GO,
    SIGNAL,
    Place,
    WarmUnavailable,
    code_root,
    idle_seconds,
    receive_exactly,
    receive_frame,
    send_frame,
)

EX_TEMPFAIL = 75
ANSWER_TIMEOUT = 10.0
SERVER_BOOT = (
    "import sys; sys.path[0] = sys.argv[1]; "  # the code of this client, not of the working directory
    "from abusepipe.warm.server import main; sys.exit(main(sys.argv[2:]))"
)


def run_warm(argv: list[str]) -> int | None:
    """Run `abusepipe ARGV` in the warm process and return its exit status; None when the warm process
    did not take it (none runs yet, it is stale, warm start is off): the caller runs it cold, with its
    standard input untouched. Raises `ValueError` for an invalid `ABUSEPIPE_WARM_SECONDS`."""
    idle = idle_seconds(os.environ)
    if idle <= 0:
        return None
    try:
        place = Place.here(os.environ)
        place.ensure_private()
    except WarmUnavailable as exc:
        print(f"abusepipe: warm start off: {exc}", file=sys.stderr)
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        try:
            sock.connect(place.socket)
        except OSError:
            start_server(place, idle)
            return None
        with Forwarding(sock) as forwarding:
            try:
                request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask()}
                send_frame(sock, request)
                # A warm process that does not answer (stopped, swamped) is not waited for. Its child
                # gets the standard streams with the go-ahead: one forked after this gave up never does.
                sock.settimeout(ANSWER_TIMEOUT)
                answer = sock.recv(1)
                if answer == ACCEPTED:
                    socket.send_fds(sock, [GO], [0, 1, 2])
                sock.settimeout(None)
            except OSError:  # TimeoutError included
                return None
            if answer != ACCEPTED:
                return None  # refused (stale: it is ending) or gone before taking the message
            forwarding.accepted()
            return _exit_status(sock, forwarding.received)


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


class Forwarding:
    """The signals this process receives while a child runs its command are the child's: passed on
    (those that came before the child took the message, as soon as it did). Refused, they are
    delivered here again once the previous handlers are back."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received: list[int] = []
        self._accepted = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Forwarding:
        for signum in FORWARDED:
            self._previous[signum] = signal.signal(signum, self._forward)
        return self

    def accepted(self) -> None:
        self._accepted = True
        for signum in self.received:
            self._send(signum)

    def _forward(self, signum: int, _: FrameType | None) -> None:
        self.received.append(signum)
        if self._accepted:
            self._send(signum)

    def _send(self, signum: int) -> None:
        try:  # noqa: SIM105 - contextlib is an import this process does not otherwise pay
            self.sock.sendall(SIGNAL + bytes([signum]))
        except OSError:
            pass  # the child is gone already: its end is reported

    def __exit__(self, *exc: object) -> None:
        if self._accepted:
            return  # the process ends with the child's status
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        for signum in self.received:
            os.kill(os.getpid(), signum)


def _exit_status(sock: socket.socket, received: list[int]) -> int:
    """Wait for the child's exit status."""
    try:
        data = receive_exactly(sock, 2)
    except (OSError, ValueError):  # the child ended without one
        data = b""
    if data[:1] == EXIT:
        return data[1]
    if received:  # the child ended of the signal passed on: so does this process, as it would cold
        signal.signal(received[-1], signal.SIG_DFL)
        os.kill(os.getpid(), received[-1])
    print(
        "abusepipe: error: the warm process ended before the message was acknowledged "
        "(nothing was acknowledged; try again)",
        file=sys.stderr,
    )
    return EX_TEMPFAIL


def start_server(place: Place, idle: float) -> None:
    """Start a warm process in the background, unless one is starting (it holds the lock)."""
    lock = place.take_lock()
    if lock is None:
        return  # starting or running: it answers the next message
    os.close(lock)  # the warm process takes the lock itself; a second one started meanwhile ends
    try:
        log = os.open(place.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    # Started by a short-lived intermediate in a session of its own, the warm process is nobody's child
    # from the start: neither an MTA that kills the pipe command's process group nor a supervisor that
    # ends the command's descendants takes it for part of this command.
    intermediate = os.fork()
    if intermediate == 0:
        try:
            os.setsid()
            os.posix_spawn(
                sys.executable,
                [sys.executable, "-c", SERVER_BOOT, code_root(), place.socket, repr(idle)],
                dict(os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log, 1),
                    (os.POSIX_SPAWN_DUP2, log, 2),
                ],
            )
        except OSError as exc:
            print(f"abusepipe: warm start off: cannot start the warm process: {exc}", file=sys.stderr)
        finally:
            os._exit(0)
    os.close(log)
    os.waitpid(intermediate, 0)


def ask(place: Place, what: str, *, timeout: float = 5.0) -> dict[str, object] | None:
    """`status` or `stop` of the warm process at `place`; None when none answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    with sock:
        try:
            sock.connect(place.socket)
            send_frame(sock, {"what": what})
            answer = receive_frame(sock)
        except (OSError, ValueError):
            return None
    return answer
