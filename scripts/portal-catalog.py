"""Update the portal's catalogs after its strings changed: extract them (pybabel) and merge them into
every `.po`, keeping the translations made so far. New strings arrive untranslated; the test
`test_portal_i18n` fails until each has a translation.

    python scripts/portal-catalog.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PORTAL = Path(__file__).resolve().parent.parent / "web" / "portal"


def main() -> int:
    template = PORTAL / "locale" / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-o",
            str(template),
            "--no-location",
            "--sort-output",
            "--project",
            "abusepipe",
            ".",
        ],
        cwd=PORTAL,
        check=True,
    )
    for po in sorted((PORTAL / "locale").glob("*/LC_MESSAGES/messages.po")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "babel.messages.frontend",
                "update",
                "-i",
                str(template),
                "-o",
                str(po),
                "-l",
                po.parent.parent.name,
                "--no-fuzzy-matching",
                "--ignore-obsolete",
            ],
            check=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
