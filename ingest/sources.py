"""Where raw messages come from: files, directories, Maildir folders, mbox files and stdin.

Every source yields `RawMessage`s one at a time, so a multi-gigabyte mbox is read in bounded memory:
at most one message (capped at the size limit) is held at once.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

MBOX_SEPARATOR = b"From "


@dataclass(frozen=True, slots=True)
class RawMessage:
    data: bytes
    source: str
    """Where it came from, for dead letters and logs: a path, `path:offset` in an mbox, or `<stdin>`."""
    truncated_from: int | None = None
    """Original size when the message was over the size limit and only its head was kept."""


@dataclass(frozen=True, slots=True)
class SourceError:
    """A path that could not be read; the other inputs go on."""

    source: str
    reason: str


class MessageSource(Protocol):
    def __iter__(self) -> Iterator[RawMessage | SourceError]: ...


def is_mbox(head: bytes) -> bool:
    return head.startswith(MBOX_SEPARATOR)


def is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


class PathSource:
    """Files, directories (recursively), Maildir folders and mbox files, in a stable order; `-` is stdin."""

    def __init__(self, paths: list[str], *, max_bytes: int, stdin: BinaryIO | None = None) -> None:
        self.paths = paths
        self.max_bytes = max_bytes
        self.stdin = stdin

    def total_bytes(self) -> int | None:
        """Sum of the input sizes, for a progress bar (None when reading stdin)."""
        total = 0
        for path in self.paths:
            if path == "-":
                return None
            for file in _files(Path(path)):
                try:
                    total += file.stat().st_size
                except OSError:
                    continue
        return total

    def __iter__(self) -> Iterator[RawMessage | SourceError]:
        for name in self.paths:
            if name == "-":
                stream = self.stdin or sys.stdin.buffer
                data = stream.read(self.max_bytes + 1)
                if len(data) > self.max_bytes:
                    size = len(data) + _drain(stream)
                    yield RawMessage(data[: self.max_bytes], "<stdin>", truncated_from=size)
                else:
                    yield RawMessage(data, "<stdin>")
                continue
            path = Path(name)
            if not path.exists():
                yield SourceError(name, "no such file or directory")
                continue
            for file in _files(path):
                yield from self._file(file)

    def _file(self, path: Path) -> Iterator[RawMessage | SourceError]:
        try:
            handle = path.open("rb")
        except OSError as exc:
            yield SourceError(str(path), exc.strerror or str(exc))
            return
        with handle:
            head = handle.read(5)
            handle.seek(0)
            if is_mbox(head):
                yield from read_mbox(handle, str(path), max_bytes=self.max_bytes)
                return
            data = handle.read(self.max_bytes + 1)
            if len(data) > self.max_bytes:
                yield RawMessage(data[: self.max_bytes], str(path), truncated_from=path.stat().st_size)
            else:
                yield RawMessage(data, str(path))


def _files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    if is_maildir(path):
        for sub in ("new", "cur"):
            yield from sorted(p for p in (path / sub).iterdir() if p.is_file() and not p.name.startswith("."))
        return
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs.sort()
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "tmp"]
            for name in sorted(files):
                if not name.startswith("."):
                    yield Path(root) / name


def _drain(stream: BinaryIO) -> int:
    skipped = 0
    while chunk := stream.read(1 << 20):
        skipped += len(chunk)
    return skipped


_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


def _next_separator(buffer: bytes, start: int) -> tuple[int, int] | None:
    """(end of the message before it, start of its `From ` line) of the next separator after `start`.

    A separator is a `From ` line after a blank line. `bytes.find` runs at memory speed; a regular
    expression cannot skip ahead here and scanned a large mbox at a fraction of that."""
    position = buffer.find(b"\nFrom ", start)
    while position >= 0:
        line = position + 1
        if buffer[line - 2 : line] == b"\n\n":
            return line - 1, line
        if buffer[line - 3 : line] == b"\n\r\n":
            return line - 2, line
        position = buffer.find(b"\nFrom ", position + 1)
    return None


READ_SIZE = 4 * 1024 * 1024


def read_mbox(handle: BinaryIO, label: str, *, max_bytes: int) -> Iterator[RawMessage]:
    """Messages of an mbox file, split at `From ` lines that follow a blank line (or start the file).

    Reads fixed-size blocks and finds separators with a compiled pattern (a Python loop over lines is
    the slowest part of a large import). `>From ` quoting (mboxrd) is undone. At most one message, capped
    at `max_bytes`, is held at once; a larger one keeps its head and its real size.
    """
    buffer = handle.read(READ_SIZE)
    if not buffer.startswith(MBOX_SEPARATOR):
        return
    base = 0  # file offset of buffer[0]
    begin = 0  # index in buffer of the current entry's `From ` line
    kept = b""  # head of an oversized entry whose middle was dropped
    dropped = 0
    eof = False
    while True:
        found = _next_separator(buffer, begin + 1)
        if found is None:
            if eof:
                break
            block = handle.read(READ_SIZE)
            eof = not block
            if len(buffer) - begin > max_bytes + READ_SIZE:
                # Oversized: keep the head once, drop the middle, hold only a tail that may hold a separator.
                if not dropped:
                    kept = buffer[begin : begin + max_bytes + 200]
                cut = len(buffer) - 64
                dropped += cut - begin
                buffer, base, begin = buffer[cut:] + block, base + cut, 0
            else:
                buffer, base, begin = buffer[begin:] + block, base + begin, 0
            continue
        end, next_begin = found
        entry = buffer[begin:end]
        yield _entry(entry, kept, dropped, f"{label}:{base + begin}", max_bytes)
        kept, dropped = b"", 0
        begin = next_begin
    entry = buffer[begin:]
    if entry.endswith(b"\n\n"):
        entry = entry[:-1]  # the blank line that ends an mbox entry is not the message's
    elif entry.endswith(b"\r\n\r\n"):
        entry = entry[:-2]
    if entry.strip() or dropped:
        yield _entry(entry, kept, dropped, f"{label}:{base + begin}", max_bytes)


def _entry(entry: bytes, kept: bytes, dropped: int, label: str, max_bytes: int) -> RawMessage:
    if dropped:
        return _oversized(kept, dropped + len(entry), label, max_bytes)
    return _mbox_message(entry, label, max_bytes)


def _oversized(head: bytes, size: int, label: str, max_bytes: int) -> RawMessage:
    _, _, data = head.partition(b"\n")
    return RawMessage(data[:max_bytes], label, truncated_from=size)


def _mbox_message(chunk: bytes, label: str, max_bytes: int) -> RawMessage:
    """One mbox entry (its `From ` line first) as a message."""
    _, _, data = chunk.partition(b"\n")
    if b">From " in data:
        data = _QUOTED_FROM.sub(rb"\1", data)
    if len(data) > max_bytes:
        return RawMessage(data[:max_bytes], label, truncated_from=len(data))
    return RawMessage(data, label)
