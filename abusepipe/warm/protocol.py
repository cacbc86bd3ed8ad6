"""What the warm process and its clients share: where the socket is, and what crosses it.

The socket lives in a directory only its user can enter (`$XDG_RUNTIME_DIR`, else `$TMPDIR` or /tmp, as
tmux does; the first whose path fits in a socket address), named by a key of the interpreter and the
abusepipe code it runs: two installations never share a warm process. Stdlib only, imported by every
piped message.

Frames:
- client -> server: a request, `!I` length then a `marshal`led dict (built in: no import to pay);
- server -> client: `A` from the child forked for it, or `R` (refused: run cold);
- client -> child: `G` with the client's fds 0, 1 and 2 attached (SCM_RIGHTS): only now can the child
  read the message, so a client that gave up waiting for `A` and runs cold never shares its input;
- child -> client: `X` and one byte of exit status; client -> child: `K` and one byte, a signal number
  the client received;
- a status or stop request is answered with one frame.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import signal
import socket
import stat
import struct
import sys
import zlib

VERSION = 1
IDLE_ENV = "ABUSEPIPE_WARM_SECONDS"
DEFAULT_IDLE_SECONDS = 60.0
ACCEPTED = b"A"
GO = b"G"
REFUSED = b"R"
EXIT = b"X"
SIGNAL = b"K"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""The signals a client passes on to the child running its command."""
FRAME = struct.Struct("!I")
MAX_FRAME = 4 * 1024 * 1024
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on the BSDs


class WarmUnavailable(Exception):
    """Warm start cannot be used here (the reason is for a log line): the command runs cold."""


def idle_seconds(environ: dict[str, str] | os._Environ[str]) -> float:
    """`ABUSEPIPE_WARM_SECONDS`: how long a warm process waits for the next message; 0 turns it off."""
    text = environ.get(IDLE_ENV, "").strip()
    if not text:
        return DEFAULT_IDLE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400:
        raise ValueError(f"{IDLE_ENV}={text!r}: expected seconds from 0 (off) to 86400")
    return value


def code_root() -> str:
    """The directory the running abusepipe package was imported from."""
    import abusepipe  # noqa: PLC0415 - already imported by whoever asks

    return os.path.dirname(os.path.dirname(os.path.realpath(abusepipe.__file__)))


class Place:
    """The warm process's files for this interpreter and code: socket, lock (held while it runs), log."""

    __slots__ = ("directory", "key")

    def __init__(self, directory: str, key: str) -> None:
        self.directory = directory
        self.key = key

    @classmethod
    def here(cls, environ: dict[str, str] | os._Environ[str]) -> Place:
        # The same environment however it is started (`abusepipe`, `python -m abusepipe.cli`, `python3`).
        interpreter = (sys.prefix, os.path.realpath(sys.executable), sys.version)
        identity = "\0".join((str(VERSION), *interpreter, code_root(), environ.get("PYTHONPATH", "")))
        data = identity.encode("utf-8", "surrogateescape")
        key = f"{zlib.crc32(data):08x}{zlib.adler32(data[::-1]):08x}"  # hashlib's import costs 4 ms
        runtime = environ.get("XDG_RUNTIME_DIR", "")
        bases = [runtime] if runtime and os.path.isdir(runtime) else []
        for base in [*bases, environ.get("TMPDIR") or "/tmp", "/tmp"]:
            place = cls(os.path.join(base, f"abusepipe-warm-{os.getuid()}"), key)
            if len(os.fsencode(place.socket)) <= SOCKET_PATH_MAX:
                return place
        raise WarmUnavailable(f"{place.socket}: too long a path for a socket")

    @property
    def socket(self) -> str:
        return os.path.join(self.directory, f"{self.key}.sock")

    @property
    def lock(self) -> str:
        return os.path.join(self.directory, f"{self.key}.lock")

    @property
    def log(self) -> str:
        return os.path.join(self.directory, f"{self.key}.log")

    def take_lock(self) -> int | None:
        """The lock a warm process holds while it runs, as an open descriptor; None while another
        holds it (a warm process for this place is starting or running)."""
        try:
            lock = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            return None
        return lock

    def ensure_private(self) -> None:
        """Create the directory, or check that only this user can use it (else someone else could
        answer as the warm process, or read the messages)."""
        try:
            os.mkdir(self.directory, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise WarmUnavailable(f"cannot create {self.directory}: {exc.strerror}") from exc
        info = os.lstat(self.directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise WarmUnavailable(f"{self.directory} is not a directory private to this user")


def encode(message: dict[str, object]) -> bytes:
    data = marshal.dumps(message)
    return FRAME.pack(len(data)) + data


def send_frame(sock: socket.socket, message: dict[str, object]) -> None:
    sock.sendall(encode(message))


def receive_frame(sock: socket.socket) -> dict[str, object]:
    """One frame; raises `ValueError` for anything malformed."""
    data = receive_exactly(sock, FRAME.size)
    (size,) = FRAME.unpack(data)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    try:
        message = marshal.loads(receive_exactly(sock, size))
    except (ValueError, EOFError, TypeError) as exc:
        raise ValueError(f"unreadable frame: {exc}") from exc
    if not isinstance(message, dict):
        raise ValueError("a frame that is not a mapping")
    return message


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    """`size` bytes, however the stream cuts them; raises `ValueError` when it ends first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError("connection closed inside a frame")
        data += chunk
    return data
