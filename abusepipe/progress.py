"""A progress bar for long ingests on a terminal (rich), silent otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def ingest_progress(*, enabled: bool, total: int | None) -> Iterator[Callable[[int, int], None]]:
    """Yields `tick(messages, bytes_read)`; a no-op when disabled."""
    if not enabled:
        yield lambda messages, read: None
        return
    progress = Progress(
        TextColumn("ingest"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[messages]} messages"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        task = progress.add_task("ingest", total=total, messages=0)

        def tick(messages: int, read: int) -> None:
            progress.update(task, completed=read, messages=messages)

        yield tick
