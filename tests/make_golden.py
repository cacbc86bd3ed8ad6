"""Regenerate tests/golden/*.json from the current parser: review every diff before committing it.

python -m tests.make_golden
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from parsers import parse_message
from tests.conftest import SAMPLES
from tests.golden_fields import pick

GOLDEN = SAMPLES.parent / "golden"
TRAP = {"flanker_office365_ndr.eml", "php-imap_exo_internal_multipart.eml"}


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for path in sorted(SAMPLES.iterdir()):
        if path.suffix not in (".eml", ".msg"):
            continue
        reports = parse_message(
            path.read_bytes(), trap=path.name in TRAP, received_at=datetime(2026, 1, 1, tzinfo=UTC)
        )
        expected = {"sample": path.name, "trap": path.name in TRAP, "reports": [pick(r) for r in reports]}
        (GOLDEN / f"{path.stem}.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
