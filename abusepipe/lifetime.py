"""Child processes that end with the process that started them.

Nothing tells a child that its parent was SIGKILLed (the OOM killer, `kill -9`): it is handed to init
and goes on, holding its memory and, for a web worker, its listening socket. A child that calls
`end_with_parent` early instead

- asks Linux to send it a signal when its parent dies (`PR_SET_PDEATHSIG`), and
- watches its parent from a thread, once a second, where that is not available;
- ends at once if its parent died before it could ask.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL = 1.0


def end_with_parent(parent: int, *, signal_number: int = signal.SIGKILL) -> None:
    """In a new child of `parent`: receive `signal_number` when `parent` dies. SIGKILL ends the child
    at once; SIGTERM lets a server that handles it finish what it is doing first.

    Linux sends the signal when the *thread* that started the child ends: the parent must start its
    children from a thread that lives as long as they do (its main thread, say)."""
    _ask_for_parent_death_signal(signal_number)
    # The parent may have died before the line above: then the child was handed to another process.
    if os.getppid() != parent:
        os._exit(0)
    threading.Thread(
        target=_watch, args=(parent, signal_number), name="abusepipe-parent-watch", daemon=True
    ).start()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ask_for_parent_death_signal(signal_number: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watching thread still ends the child, a second later


def _watch(parent: int, signal_number: int) -> None:
    # A dead parent's children are handed to another process at once (even while it is a zombie).
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    os.kill(os.getpid(), signal_number)
