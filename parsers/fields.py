"""`Name: value` field blocks (message/feedback-report bodies, X-ARF report.txt, SpamCop text)."""

from __future__ import annotations

import re

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9_-]{0,60})\s*:\s?(.*)$")


def parse_fields(text: str, *, limit: int = 500) -> list[tuple[str, str]]:
    """Lower-case names with unfolded values, in order; blank lines and junk lines are skipped."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t" and out:
            name, value = out[-1]
            out[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        match = _FIELD.match(line)
        if match:
            out.append((match.group(1).lower(), match.group(2).strip()))
            if len(out) >= limit:
                break
    return out


def first(fields: list[tuple[str, str]], name: str) -> str | None:
    for key, value in fields:
        if key == name and value:
            return value
    return None


def every(fields: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in fields if key == name and value]
