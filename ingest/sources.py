"""Where raw messages come from: files, directories, Maildir folders, mbox files and stdin.

Every source yields `RawMessage`s one at a time, so a multi-gigabyte mbox is read in bounded memory:
at most one message (capped at the size limit) is held at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

MBOX_SEPARATOR = b"From "
MAX_LINE = 1 << 20


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


def read_mbox(handle: BinaryIO, label: str, *, max_bytes: int) -> Iterator[RawMessage]:
    """Messages of an mbox file, split at `From ` lines that follow a blank line (or start the file).

    `>From ` quoting (mboxrd) is undone. A message over `max_bytes` keeps its head and its real size.
    """
    buffer: list[bytes] = []
    size = 0
    start = 0
    offset = 0
    previous_blank = True
    at_line_start = True
    while line := handle.readline(MAX_LINE):  # bounded: a hostile multi-GB line arrives in pieces
        line_start, at_line_start = at_line_start, line.endswith(b"\n")
        if line_start and previous_blank and line.startswith(MBOX_SEPARATOR):
            if offset:
                yield _mbox_message(buffer, size, f"{label}:{start}", max_bytes)
            buffer, size, start = [], 0, offset
            offset += len(line)
            previous_blank = False
            continue
        offset += len(line)
        previous_blank = line_start and line in (b"\n", b"\r\n")
        if line_start and line.startswith(b">") and line.lstrip(b">").startswith(MBOX_SEPARATOR):
            line = line[1:]
        size += len(line)
        if size <= max_bytes:
            buffer.append(line)
    if offset:
        yield _mbox_message(buffer, size, f"{label}:{start}", max_bytes)


def _mbox_message(lines: list[bytes], size: int, label: str, max_bytes: int) -> RawMessage:
    data = b"".join(lines)
    if data.endswith(b"\n\n"):
        data = data[:-1]  # the blank line before the next separator belongs to the mbox, not the message
    elif data.endswith(b"\r\n\r\n"):
        data = data[:-2]
    return RawMessage(data, label, truncated_from=size if size > max_bytes else None)
