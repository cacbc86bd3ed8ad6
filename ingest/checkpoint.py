"""A file checkpoint: the sources (file paths, `mbox:offset`) whose messages are durably stored or
acknowledged by the broker, so that a re-run skips them instead of reading them again.

Written only after the sink acknowledged a batch, appended and fsync'ed: a crash loses at most the
record of the last batch, which the next run then writes again (harmless: report ids deduplicate).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from abusepipe.errors import ConfigError
from ingest.sources import RawMessage, SourceError


class Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[str] = set()
        self.skipped = 0
        try:
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, 1):
                    if line.strip():
                        self.done.add(_source_of(line, path, number))
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the checkpoint {path}: {exc}") from exc
        try:
            self._out = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write the checkpoint {path}: {exc.strerror or exc}") from exc

    def pending(self, source: Iterable[RawMessage | SourceError]) -> Iterator[RawMessage | SourceError]:
        """What `source` yields, without the messages a previous run acknowledged."""
        for item in source:
            if isinstance(item, RawMessage) and item.source in self.done:
                self.skipped += 1
                continue
            yield item

    def record(self, sources: Iterable[str]) -> None:
        """Called once a batch is acknowledged."""
        lines = [json.dumps(s, ensure_ascii=False) + "\n" for s in sources]
        self._out.writelines(lines)
        self._out.flush()
        os.fsync(self._out.fileno())

    def close(self) -> None:
        self._out.close()


def _source_of(line: str, path: Path, number: int) -> str:
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if not isinstance(value, str):
        raise ConfigError(f"{path}:{number}: not a checkpoint line (a JSON string per line)")
    return value
