"""One listing as `blocklist show` and the console present it: state, what covers it, the evidence
counted by the policy now, and its history. Counts only: never who reported it or which trap caught it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from blocklist.evidence import exact_counts, last_seen
from blocklist.listings import covering, get, history
from blocklist.policy import ListingPolicy


def describe(
    connection: Connection, policy: ListingPolicy, kind: str, key: str, now: datetime
) -> dict[str, Any]:
    listing = get(connection, kind, key)
    covers = (
        [x for x in covering(connection, key, now) if x.kind != kind or x.key != key] if kind == "ip" else []
    )
    since = now - policy.window
    ended = listing.ended(now) if listing is not None else None
    start = max(since, ended) if ended is not None else since
    reporters, traps = exact_counts(connection, kind, key, start)
    newest = last_seen(connection, kind, key)
    state = listing.effective_state(now) if listing is not None else "not listed"
    if state != "listed" and covers:
        state = "listed"
    window = policy.window.total_seconds() / 3600
    return {
        "kind": kind,
        "key": key,
        "state": state,
        "listing": listing.document(now) if listing is not None else None,
        "covered_by": [x.document(now) for x in covers],
        "never": policy.never(kind, key),
        "evidence": {
            "window": f"{window:g} h",
            "since": start.isoformat(),
            "reporters": reporters,
            "traps": traps,
            "reporters_needed": policy.reporters,
            "traps_needed": policy.traps,
            "last_seen": newest.isoformat() if newest is not None else None,
        },
        "history": [change.document() for change in history(connection, kind, key)],
    }
