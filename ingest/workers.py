"""Parser worker processes that never outlive the command that started them.

A `ProcessPoolExecutor` worker waits on its task queue forever: when its parent is killed (SIGKILL, the
OOM killer) nothing tells it, and a forked worker inherits the parent's Python signal handlers (the SMTP
intake's asyncio handler writes SIGTERM to a wakeup pipe nobody reads), so it ignores SIGTERM too. Each
worker here therefore:

- takes back the default SIGTERM (it ends the worker) and ignores SIGINT (a Ctrl-C on the terminal is
  the parent's to handle: it drains the pool);
- asks Linux to kill it when its parent dies (`PR_SET_PDEATHSIG`), and also watches its parent from a
  thread, once a second, where that is not available.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL = 1.0


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
    if initializer is not None:
        initializer(*initargs)


def follow_parent(creator: int) -> None:
    """Run in a new worker process: end it when its parent ends, and with SIGTERM."""
    with contextlib.suppress(ValueError):  # not the main thread (cannot happen in a pool worker)
        signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    _ask_for_parent_death_signal()
    # The parent may have died before the line above: then the worker has been handed to another
    # process already (init, or a subreaper). `creator` is the parent itself with the fork start method;
    # with forkserver (Python 3.14's default) the parent is the fork server, which ends with the creator.
    if parent == 1 or (parent != creator and not _alive(creator)):
        os._exit(0)
    threading.Thread(target=_watch, args=(parent,), name="abusepipe-parent-watch", daemon=True).start()


def _ask_for_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watching thread still ends the worker, a second later


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch(parent: int) -> None:
    # A dead parent's children are handed to another process at once (even while it is a zombie).
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    os._exit(0)
