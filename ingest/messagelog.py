"""One JSON line per message on stderr: what every intake (smtp, imap, the MTA pipe) logs of a message.

Cheap to import: the MTA pipe, one process per message, logs through it.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from datetime import UTC, datetime
from typing import TextIO

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*<?([^\r\n>]{1,250})>?", re.IGNORECASE | re.MULTILINE)


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID of the received message itself (for the log line), from its header block."""
    window = raw[:65536]
    ends = [i for i in (window.find(b"\r\n\r\n"), window.find(b"\n\n")) if i >= 0]
    head = window[: min(ends)] if ends else window
    match = _MESSAGE_ID.search(head)
    return match[1].decode("utf-8", "replace").strip() if match else None


class MessageLog:
    """One JSON line per message on a text stream (stderr by default)."""

    def __init__(self, intake: str, stream: TextIO | None = None) -> None:
        self.intake = intake
        self._stream = stream
        self._lock = threading.Lock()

    def message(
        self, *, source: str, message_id: str | None, outcome: str, reports: int = 0, reason: str = ""
    ) -> None:
        entry: dict[str, object] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "intake": self.intake,
            "source": source,
            "message_id": message_id,
            "outcome": outcome,
            "reports": reports,
        }
        if reason:
            entry["reason"] = reason[:500]
        line = json.dumps(entry, ensure_ascii=False)
        with self._lock:
            stream = self._stream or sys.stderr
            stream.write(line + "\n")
            stream.flush()

    def text(self, line: str) -> None:
        with self._lock:
            stream = self._stream or sys.stderr
            stream.write(f"abusepipe: {line}\n")
            stream.flush()
