"""Parser worker processes that never outlive the command that started them.

A `ProcessPoolExecutor` worker waits on its task queue forever: when its parent is killed (SIGKILL, the
OOM killer) nothing tells it, and a forked worker inherits the parent's Python signal handlers (the SMTP
intake's asyncio handler writes SIGTERM to a wakeup pipe nobody reads), so it ignores SIGTERM too. Each
worker here therefore:

- takes back the default SIGTERM (it ends the worker) and ignores SIGINT (a Ctrl-C on the terminal is
  the parent's to handle: it drains the pool);
- ends with its parent (`abusepipe.lifetime.end_with_parent`: Linux's parent-death signal, else a thread
  watching the parent).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from abusepipe.cycle_collector import collect_less_often
from abusepipe.lifetime import alive, end_with_parent


def parser_pool(
    workers: int, *, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A process pool whose workers end with their parent (see the module's docstring).

    Start it (submit the first task) from a thread that lives as long as the pool: Linux's parent-death
    signal fires when the thread that forked a worker ends."""
    return ProcessPoolExecutor(
        max_workers=workers, initializer=_start_worker, initargs=(os.getpid(), initializer, initargs)
    )


def _start_worker(creator: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    follow_parent(creator)
    collect_less_often()  # inherited with fork; not with forkserver or spawn
    if initializer is not None:
        initializer(*initargs)


def follow_parent(creator: int) -> None:
    """Run in a new worker process: end it when its parent ends, and with SIGTERM."""
    with contextlib.suppress(ValueError):  # not the main thread (cannot happen in a pool worker)
        signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    # `creator` is the parent itself with the fork start method; with forkserver (Python 3.14's default)
    # the parent is the fork server, which ends with the creator.
    if parent == 1 or (parent != creator and not alive(creator)):
        os._exit(0)
    end_with_parent(parent)
