"""What the tests read of other processes from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after "pid (comm)": state, ppid, pgrp, ...; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def zombie(pid: int | str) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] == "Z"
