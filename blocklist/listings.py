"""Listings and their history: the policy applied to the evidence, manual listing and delisting, expiry.

Every function takes an open connection and writes inside the caller's transaction (a dry run rolls it
back). A listing's stored `state` is `listed`, `delisted` or `expired`; a listed row whose `expires_at`
has passed is expired whether or not the sweep (`expire_due`) has written that yet, so expiry needs no
operator action: every reader computes the effective state.

Several writers (ingest, consume, smtp, the console) may evaluate the same offender at once: a new
listing is inserted with ON CONFLICT DO NOTHING and a change is an UPDATE guarded by the `updated_at` it
read, so the loser of a race writes nothing (and no event) instead of failing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, desc, func, insert, or_, select, update

from abusepipe.errors import AbusepipeError, ConfigError
from blocklist.evidence import exact_counts, hourly_counts, last_seen_many
from blocklist.keys import MIN_PREFIX, normalize
from blocklist.policy import ADDRESS_KINDS, LISTABLE, ListingPolicy
from parsers.attribution import network_of
from sinks import models as m
from sinks.queries import utc
from sinks.store import do_nothing, insert_rows

POLICY = "policy"
"""The actor of what the listing policy does by itself."""
EVENTS = (
    "listed",
    "extended",
    "delist-requested",
    "delisted-by-sender",
    "delisted-by-analyst",
    "refused",
    "expired",
    "relisted",
)
STATES = ("listed", "delisted", "expired")
EXTENDED_EVERY = timedelta(hours=1)
"""A listing kept alive by a stream of reports gets an `extended` event at most this often."""
EXTEND_EVERY = timedelta(minutes=10)
"""A listing in force is extended by new evidence at most this often: a source reported every second
costs one look every ten minutes, not one per batch (its expiry trails the evidence by at most this)."""
L = m.listings


class NotListed(AbusepipeError):
    """The listing asked for does not exist or is not in force."""


@dataclass(frozen=True, slots=True)
class Listing:
    kind: str
    key: str
    state: str
    """As stored; `effective_state` says whether it is in force now."""
    origin: str
    reason: str
    reason_code: str
    listed_at: datetime
    expires_at: datetime | None
    ttl_seconds: int
    last_evidence_at: datetime | None
    ended_at: datetime | None
    network: str | None
    updated_at: datetime

    @classmethod
    def of(cls, row: Any) -> Listing:
        def moment(value: datetime | None) -> datetime | None:
            return utc(value) if value is not None else None

        return cls(
            kind=row.kind,
            key=row.key,
            state=row.state,
            origin=row.origin,
            reason=row.reason,
            reason_code=row.reason_code,
            listed_at=utc(row.listed_at),
            expires_at=moment(row.expires_at),
            ttl_seconds=row.ttl_seconds,
            last_evidence_at=moment(row.last_evidence_at),
            ended_at=moment(row.ended_at),
            network=row.network,
            updated_at=utc(row.updated_at),
        )

    def effective_state(self, now: datetime) -> str:
        if self.state == "listed" and self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return self.state

    def in_force(self, now: datetime) -> bool:
        return self.effective_state(now) == "listed"

    def ended(self, now: datetime) -> datetime | None:
        """When it stopped being in force (None while it is)."""
        if self.in_force(now):
            return None
        if self.state == "listed":
            return self.expires_at
        return self.ended_at

    def document(self, now: datetime) -> dict[str, Any]:
        """The JSON document of `blocklist list` and of the API."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "kind": self.kind,
            "key": self.key,
            "state": self.effective_state(now),
            "origin": self.origin,
            "listed_at": iso(self.listed_at),
            "expires_at": iso(self.expires_at),
            "reason": self.reason,
            "reason_code": self.reason_code,
            "last_evidence_at": iso(self.last_evidence_at),
            "ended_at": iso(self.ended(now)),
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One event: what happened to a listing, as `blocklist evaluate` shows it and the history keeps it."""

    kind: str
    key: str
    event: str
    reason: str
    actor: str
    at: datetime
    expires_at: datetime | None = None

    def document(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "event": self.event,
            "reason": self.reason,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }

    def line(self) -> str:
        until = f" until {self.expires_at:%Y-%m-%d %H:%M} UTC" if self.expires_at else ""
        return f"{self.event} {self.kind} {self.key}{until}: {self.reason}"


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours >= 48 and hours % 24 == 0:
        return f"{int(hours // 24)} d"
    return f"{hours:g} h"


# --- reading --------------------------------------------------------------------------------------------


def load(connection: Connection, kind: str, keys: Iterable[str]) -> dict[str, Listing]:
    wanted = sorted(set(keys))
    out: dict[str, Listing] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for row in connection.execute(select(L).where(L.c.kind == kind, L.c.key.in_(chunk))):
            out[row.key] = Listing.of(row)
    return out


def get(connection: Connection, kind: str, key: str) -> Listing | None:
    return load(connection, kind, [key]).get(key)


def listings(
    connection: Connection,
    now: datetime,
    *,
    state: str | None = None,
    kinds: Iterable[str] = (),
    limit: int | None = None,
) -> list[Listing]:
    """Listings by effective state (None: all), newest first."""
    query = select(L)
    if kinds:
        query = query.where(L.c.kind.in_(list(kinds)))
    in_force = and_(L.c.state == "listed", or_(L.c.expires_at.is_(None), L.c.expires_at > now))
    if state == "listed":
        query = query.where(in_force)
    elif state == "expired":
        query = query.where(or_(L.c.state == "expired", and_(L.c.state == "listed", L.c.expires_at <= now)))
    elif state == "delisted":
        query = query.where(L.c.state == "delisted")
    elif state is not None:
        raise ConfigError(f"--state {state!r}: choose one of {', '.join(STATES)}")
    query = query.order_by(desc(L.c.updated_at), L.c.kind, L.c.key)
    if limit is not None:
        query = query.limit(limit)
    return [Listing.of(row) for row in connection.execute(query)]


def history(connection: Connection, kind: str, key: str, *, limit: int = 200) -> list[Change]:
    e = m.listing_events
    query = (
        select(e).where(e.c.kind == kind, e.c.key == key).order_by(desc(e.c.at), desc(e.c.id)).limit(limit)
    )
    return [
        Change(row.kind, row.key, row.event, row.reason, row.actor, utc(row.at))
        for row in connection.execute(query)
    ]


def covering(connection: Connection, ip: str, now: datetime) -> list[Listing]:
    """The listings in force that cover an address: its own and any network's that contains it (one
    indexed look per prefix a network listing may have, never a scan of the network listings)."""
    return [x for x in around(connection, ip) if x.in_force(now)]


_AROUND = select(L).where(
    or_(
        and_(L.c.kind == "ip", L.c.key == bindparam("ip")),
        and_(L.c.kind == "network", L.c.key.in_(bindparam("networks", expanding=True))),
    )
)


def prefixes(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    """Every network a listing may name that holds `address`, as the keys are written (`str` of the
    network), from the widest allowed to the address itself; integer arithmetic, as this is on the
    portal's every lookup."""
    bits = address.max_prefixlen
    value = int(address)
    out = []
    for prefix in range(MIN_PREFIX[address.version], bits + 1):
        masked = value & ~((1 << (bits - prefix)) - 1)
        if address.version == 4:
            text = f"{masked >> 24}.{(masked >> 16) & 255}.{(masked >> 8) & 255}.{masked & 255}"
        else:
            text = str(ipaddress.IPv6Address(masked))
        out.append(f"{text}/{prefix}")
    return out


def around(connection: Connection, ip: str) -> list[Listing]:
    """Every listing of an address or of a network holding it, in force or not, narrowest first."""
    address = ipaddress.ip_address(ip)
    rows = connection.execute(_AROUND, {"ip": str(address), "networks": prefixes(address)})
    found = [Listing.of(row) for row in rows]
    return sorted(found, key=lambda x: -ipaddress.ip_network(x.key, strict=False).prefixlen)


# --- writing --------------------------------------------------------------------------------------------


def _record(connection: Connection, change: Change) -> Change:
    connection.execute(
        insert(m.listing_events).values(
            kind=change.kind,
            key=change.key,
            at=change.at,
            event=change.event,
            actor=change.actor[:100],
            reason=change.reason,
        )
    )
    return change


record = _record
"""Write one event to a listing's history (the portal's `delist-requested`, an analyst's `refused`)."""


def _insert(connection: Connection, values: dict[str, Any]) -> bool:
    """Insert a new listing unless another writer just did; True when this one did."""
    stmt: Any
    if connection.dialect.name == "postgresql":  # imported here: the MTA pipe on SQLite never needs it
        from sqlalchemy.dialects import postgresql  # noqa: PLC0415

        stmt = postgresql.insert(L)
    else:
        from sqlalchemy.dialects import sqlite  # noqa: PLC0415

        stmt = sqlite.insert(L)
    stmt = stmt.values(**values).on_conflict_do_nothing()
    return connection.execute(stmt).rowcount == 1


def _update(connection: Connection, listing: Listing, values: dict[str, Any]) -> bool:
    """Change a listing unless another writer changed it since it was read; True when this one did."""
    stmt = (
        update(L)
        .where(L.c.kind == listing.kind, L.c.key == listing.key, L.c.updated_at == listing.updated_at)
        .values(**values)
    )
    return connection.execute(stmt).rowcount == 1


def _last_event_at(connection: Connection, kind: str, key: str) -> datetime | None:
    e = m.listing_events
    query = select(func.max(e.c.at)).where(e.c.kind == kind, e.c.key == key)
    moment = connection.execute(query).scalar()
    return utc(moment) if moment is not None else None


def _list(
    connection: Connection,
    policy: ListingPolicy,
    *,
    kind: str,
    key: str,
    existing: Listing | None,
    reason: str,
    code: str,
    last: datetime | None,
    expires_at: datetime | None,
    now: datetime,
    actor: str = POLICY,
    origin: str = "policy",
    ttl: timedelta | None = None,
) -> Change | None:
    """List, relist or extend `key`; the change made, or None when there was none to make."""
    values = _values(reason, code, last=last, expires_at=expires_at, ttl=ttl, now=now, origin=origin)
    if existing is None:
        values |= {"kind": kind, "key": key, "listed_at": now, "network": _network(kind, key)}
        if not _insert(connection, values):
            return None
        return _record(connection, Change(kind, key, "listed", reason, actor, now, expires_at))
    if existing.in_force(now):
        # A policy listing of an IP only grows; a network's follows its IPs both ways.
        if origin == "policy" and existing.expires_at is not None and expires_at is not None:
            unchanged = (
                expires_at == existing.expires_at if kind == "network" else expires_at <= existing.expires_at
            )
            if unchanged:
                return None
        if not _update(connection, existing, values):
            return None
        previous = _last_event_at(connection, kind, key)
        if origin == "policy" and previous is not None and now - previous < EXTENDED_EVERY:
            return None  # the expiry moved; the history need not say so for every batch
        return _record(connection, Change(kind, key, "extended", reason, actor, now, expires_at))
    ended = existing.ended(now)
    if existing.state == "listed" and ended is not None:  # expired, but the sweep has not said so yet
        _record(connection, _expiry(existing, ended))
    values |= {"listed_at": now}
    if not _update(connection, existing, values):
        return None
    return _record(connection, Change(kind, key, "relisted", reason, actor, now, expires_at))


def _network(kind: str, key: str) -> str | None:
    return network_of(key) if kind == "ip" else None


def _expiry(listing: Listing, at: datetime) -> Change:
    if listing.kind == "network" and listing.origin == "policy":
        reason = "fewer of its IPs are listed"
    elif listing.last_evidence_at is not None:
        reason = f"no new evidence since {listing.last_evidence_at:%Y-%m-%d %H:%M} UTC"
    else:
        reason = "its TTL ran out"
    return Change(listing.kind, listing.key, "expired", reason, POLICY, at)


def ended_since(connection: Connection, since: datetime) -> list[tuple[str, str]]:
    """The listings delisted or expired (as stored) since `since`: a writer forgets what it thought
    settled about them."""
    query = select(L.c.kind, L.c.key).where(L.c.updated_at > since, L.c.state != "listed")
    return [(row.kind, row.key) for row in connection.execute(query)]


def expire_due(connection: Connection, now: datetime) -> list[Change]:
    """Write down the listings whose TTL has run out (each event at the moment it expired)."""
    query = select(L).where(L.c.state == "listed", L.c.expires_at <= now)
    changes = []
    for listing in [Listing.of(row) for row in connection.execute(query)]:
        at = listing.expires_at or now
        if _update(connection, listing, {"state": "expired", "ended_at": at, "updated_at": now}):
            changes.append(_record(connection, _expiry(listing, at)))
    return changes


# --- the policy -----------------------------------------------------------------------------------------


def _meets(policy: ListingPolicy, counts: tuple[int, int]) -> bool:
    return counts[0] >= policy.reporters or counts[1] >= policy.traps


def _why(policy: ListingPolicy, counts: tuple[int, int]) -> tuple[str, str]:
    window = _hours(policy.window)
    if counts[0] >= policy.reporters:
        return f"{counts[0]} distinct reporters reported junk from it within {window}", "reports"
    return f"{counts[1]} spam traps caught it within {window}", "traps"


Settled = dict[tuple[str, str], datetime]
"""(kind, key) → until when its listing needs no look (a writer's memory of `_settled`)."""


def evaluate_keys(
    connection: Connection,
    policy: ListingPolicy,
    kind: str,
    keys: Iterable[str],
    now: datetime,
    *,
    settled: Settled | None = None,
) -> list[Change]:
    """Apply the policy to offenders of one kind (not `network`: networks follow their IPs).

    `settled`, kept by a long-running writer across batches, spares it even the look at listings it
    knows need none: the sources of a flood are listed once and then cost nothing per batch."""
    if kind not in policy.kinds or kind == "network":
        return []
    candidates = [key for key in set(keys) if policy.never(kind, key) is None]
    if settled is not None:
        candidates = [key for key in candidates if settled.get((kind, key), now) <= now]
    if not candidates:
        return []
    since = now - policy.window
    existing = load(connection, kind, candidates)  # a flood's sources are listed already: no counting
    unsettled = [key for key in candidates if not _settled(existing.get(key), now)]
    if settled is not None:
        for key, held in existing.items():
            until = _settled_until(held, now)
            if until is not None:
                settled[(kind, key)] = until
    if not unsettled:
        return []
    upper = hourly_counts(connection, kind, unsettled, since, full_hours=False)
    todo = sorted(key for key, counts in upper.items() if _meets(policy, counts))
    if not todo:
        return []
    lower = hourly_counts(connection, kind, todo, since, full_hours=True)
    newest = last_seen_many(connection, kind, todo, since)
    changes: list[Change] = []
    new: list[tuple[dict[str, Any], Change]] = []  # first listings: inserted together below
    for key in todo:
        listing = existing.get(key)
        ended = listing.ended(now) if listing is not None else None
        if ended is not None and ended > since:  # only what came after the delisting counts
            counts = exact_counts(connection, kind, key, ended)
        else:
            counts = lower.get(key, (0, 0))
            if not _meets(policy, counts):  # it hangs on the window's oldest, partial hour
                counts = exact_counts(connection, kind, key, since)
        if not _meets(policy, counts):
            continue
        last = newest.get(key) or now
        if listing is None:
            reason, code = _why(policy, counts)
            expires_at = last + policy.ttl
            if expires_at > now:
                values = _values(
                    reason, code, last=last, expires_at=expires_at, ttl=policy.ttl, now=now, origin="policy"
                )
                values |= {"kind": kind, "key": key, "listed_at": now, "network": _network(kind, key)}
                new.append((values, Change(kind, key, "listed", reason, POLICY, now, expires_at)))
            continue
        change = _apply(
            connection, policy, kind=kind, key=key, listing=listing, counts=counts, last=last, now=now
        )
        if change is not None:
            changes.append(change)
    listed = _insert_many(connection, new)
    if settled is not None:
        for change in listed:
            until = min(now + EXTEND_EVERY, change.expires_at or now + EXTEND_EVERY)
            settled[(change.kind, change.key)] = until
    return changes + listed


def _insert_many(connection: Connection, new: list[tuple[dict[str, Any], Change]]) -> list[Change]:
    """New listings in a few statements (a flood of new sources lists hundreds per batch); those
    another writer inserted first are left to it, with their events."""
    if not new:
        return []
    rows = [values for values, _ in new]
    inserted = {row[0] for row in insert_rows(connection, L, rows, conflict=do_nothing, returning=[L.c.key])}
    changes = [change for values, change in new if values["key"] in inserted]
    events = [
        {"kind": c.kind, "key": c.key, "at": c.at, "event": c.event, "actor": c.actor, "reason": c.reason}
        for c in changes
    ]
    insert_rows(connection, m.listing_events, events)
    return changes


def _values(
    reason: str,
    code: str,
    *,
    last: datetime | None,
    expires_at: datetime | None,
    ttl: timedelta | None,
    now: datetime,
    origin: str,
) -> dict[str, Any]:
    return {
        "state": "listed",
        "origin": origin,
        "reason": reason,
        "reason_code": code,
        "expires_at": expires_at,
        "ttl_seconds": int(ttl.total_seconds()) if ttl is not None else 0,
        "last_evidence_at": last,
        "updated_at": now,
    }


def _settled_until(listing: Listing, now: datetime) -> datetime | None:
    if not _settled(listing, now):
        return None
    if listing.origin == "manual" or listing.last_evidence_at is None:
        return now + EXTEND_EVERY  # looked at again now and then: an analyst may lift it
    until = listing.last_evidence_at + EXTEND_EVERY
    return min(until, listing.expires_at) if listing.expires_at is not None else until


def _settled(listing: Listing | None, now: datetime) -> bool:
    """Nothing to do for now: a manual listing in force (the analyst's decision stands), or a policy
    listing in force whose evidence was looked at less than EXTEND_EVERY ago."""
    if listing is None or not listing.in_force(now):
        return False
    if listing.origin == "manual":
        return True
    return listing.last_evidence_at is not None and now - listing.last_evidence_at < EXTEND_EVERY


def _apply(
    connection: Connection,
    policy: ListingPolicy,
    *,
    kind: str,
    key: str,
    listing: Listing | None,
    counts: tuple[int, int],
    last: datetime,
    now: datetime,
) -> Change | None:
    reason, code = _why(policy, counts)
    if listing is not None and listing.in_force(now):
        ttl = timedelta(seconds=listing.ttl_seconds) if listing.ttl_seconds else policy.ttl
    else:
        previous = None
        ended = listing.ended(now) if listing is not None else None
        if listing is not None and ended is not None and now - ended <= policy.relist_window:
            previous = timedelta(seconds=listing.ttl_seconds) if listing.ttl_seconds else policy.ttl
        ttl = policy.next_ttl(previous)
    expires_at = last + ttl
    if expires_at <= now:
        return None  # the evidence is older than a listing would last
    return _list(
        connection,
        policy,
        kind=kind,
        key=key,
        existing=listing,
        reason=reason,
        code=code,
        last=last,
        expires_at=expires_at,
        now=now,
        ttl=ttl,
    )


def recount_networks(
    connection: Connection, policy: ListingPolicy, networks: Iterable[str], now: datetime
) -> list[Change]:
    """List a /24 or /48 while at least `network_ips` of its IPs are listed; end it when fewer are."""
    if "network" not in policy.kinds:
        return []
    changes: list[Change] = []
    for network in sorted(set(networks)):
        listing = get(connection, "network", network)
        if listing is not None and listing.origin == "manual" and listing.in_force(now):
            continue
        query = select(L.c.expires_at, L.c.listed_at).where(
            L.c.kind == "ip",
            L.c.network == network,
            L.c.state == "listed",
            or_(L.c.expires_at.is_(None), L.c.expires_at > now),
        )
        members = connection.execute(query).all()
        if listing is not None and listing.state == "delisted" and listing.ended_at is not None:
            ended = listing.ended_at  # after a delisting only IPs listed since count again
            members = [row for row in members if utc(row.listed_at) > ended]
        count = len(members)
        never = policy.never("network", network)
        if count >= policy.network_ips and never is None:
            horizon = datetime.max.replace(tzinfo=UTC)
            ends = sorted((utc(r.expires_at) if r.expires_at else horizon for r in members), reverse=True)
            nth = ends[policy.network_ips - 1]
            expires_at = None if nth == horizon else nth
            reason = f"{count} of its IPs are listed"
            ttl = (expires_at - now) if expires_at is not None else None
            change = _list(
                connection,
                policy,
                kind="network",
                key=network,
                existing=listing,
                reason=reason,
                code="network",
                last=now,
                expires_at=expires_at,
                now=now,
                ttl=ttl,
            )
            if change is not None:
                changes.append(change)
        elif listing is not None and listing.in_force(now) and listing.origin == "policy":
            values = {"state": "expired", "ended_at": now, "updated_at": now}
            if _update(connection, listing, values):
                reason = f"only {count} of its IPs are listed" if never is None else never
                changes.append(
                    _record(connection, Change("network", network, "expired", reason, POLICY, now))
                )
    return changes


def evaluate_touched(
    connection: Connection,
    policy: ListingPolicy,
    touched: Iterable[tuple[str, str]],
    now: datetime,
    *,
    settled: Settled | None = None,
) -> list[Change]:
    """Re-evaluate the offenders a committed batch counted new junk against."""
    by_kind: dict[str, set[str]] = {}
    for kind, key in touched:
        if kind in policy.kinds and kind != "network":
            by_kind.setdefault(kind, set()).add(key)
    changes: list[Change] = []
    for kind, keys in sorted(by_kind.items()):
        changes += evaluate_keys(connection, policy, kind, keys, now, settled=settled)
    networks = {network_of(c.key) for c in changes if c.kind == "ip"}
    changes += recount_networks(connection, policy, (n for n in networks if n), now)
    return changes


def evaluate_all(connection: Connection, policy: ListingPolicy, now: datetime, *, actor: str) -> list[Change]:
    """Re-evaluate every offender with evidence in the window and every listing in force: after a change
    of policy, what it no longer allows is delisted; thresholds decide new listings, and listings made
    under the old thresholds run until they expire."""
    changes = expire_due(connection, now)
    since_hour = int((now - policy.window).timestamp() // 3600)
    for kind in policy.kinds:
        if kind == "network":
            continue
        keys: set[str] = set()
        for table in (m.offender_reporter_hours, m.offender_trap_hours):
            query = select(table.c.key).where(table.c.kind == kind, table.c.hour >= since_hour).distinct()
            keys.update(connection.execute(query).scalars())
        changes += evaluate_keys(connection, policy, kind, keys, now)
    for listing in listings(connection, now, state="listed"):
        if listing.origin != "policy":
            continue
        why = (
            "its kind is no longer listed"
            if listing.kind not in policy.kinds
            else policy.never(listing.kind, listing.key)
        )
        if why is not None:
            changes += _delist(connection, listing, f"the policy no longer lists it: {why}", actor, now)
    networks = set(
        connection.execute(
            select(L.c.network).where(L.c.kind == "ip", L.c.network.is_not(None)).distinct()
        ).scalars()
    )
    networks |= set(connection.execute(select(L.c.key).where(L.c.kind == "network")).scalars())
    changes += recount_networks(connection, policy, networks, now)
    return changes


def _delist(
    connection: Connection, listing: Listing, reason: str, actor: str, now: datetime, *, event: str = ""
) -> list[Change]:
    values = {"state": "delisted", "ended_at": now, "updated_at": now}
    if not _update(connection, listing, values):
        return []
    change = Change(listing.kind, listing.key, event or "delisted-by-analyst", reason, actor, now)
    return [_record(connection, change)]


# --- by hand --------------------------------------------------------------------------------------------


def add(
    connection: Connection,
    policy: ListingPolicy,
    kind: str,
    key: str,
    *,
    reason: str,
    actor: str,
    now: datetime,
    ttl: timedelta | None = None,
    force: bool = False,
) -> list[Change]:
    """List by hand: kept until removed by hand (or its TTL, when given, runs out)."""
    key = normalize(kind, key)
    if not reason.strip():
        raise ConfigError("a listing needs a reason (--reason)")
    why = policy.never(kind, key)
    if why is not None and not force and why not in ("a private or reserved address",):
        raise ConfigError(f"{kind} {key} is never listed: {why} (--force lists it all the same)")
    expires_at = now + ttl if ttl is not None else None
    existing = get(connection, kind, key)
    change = _list(
        connection,
        policy,
        kind=kind,
        key=key,
        existing=existing,
        reason=" ".join(reason.split())[:500],
        code="manual",
        last=existing.last_evidence_at if existing else None,
        expires_at=expires_at,
        now=now,
        actor=actor,
        origin="manual",
        ttl=ttl,
    )
    if change is None:
        raise ConfigError(f"{kind} {key} changed while it was being listed: try again")
    changes = [change]
    if kind == "ip":
        changes += recount_networks(connection, policy, [network_of(key) or ""], now)
    return changes


def remove(
    connection: Connection,
    policy: ListingPolicy,
    kind: str,
    key: str,
    *,
    reason: str,
    actor: str,
    now: datetime,
    event: str = "delisted-by-analyst",
) -> list[Change]:
    """Delist (by an analyst, or by the sender through the portal): the policy lists it again only on
    evidence that comes after this moment."""
    key = normalize(kind, key)
    if not reason.strip():
        raise ConfigError("a delisting needs a reason (--reason)")
    listing = get(connection, kind, key)
    if listing is None or not listing.in_force(now):
        raise NotListed(f"{kind} {key} is not listed")
    changes = _delist(connection, listing, " ".join(reason.split())[:500], actor, now, event=event)
    if not changes:
        raise ConfigError(f"{kind} {key} changed while it was being delisted: try again")
    if kind == "ip":
        changes += recount_networks(connection, policy, [network_of(key) or ""], now)
    return changes


def kind_of(text: str) -> str:
    if text not in LISTABLE:
        raise ConfigError(f"unknown listing kind {text!r}: choose one of {', '.join(LISTABLE)}")
    return text


__all__ = [
    "ADDRESS_KINDS",
    "EVENTS",
    "STATES",
    "Change",
    "Listing",
    "NotListed",
    "add",
    "covering",
    "evaluate_all",
    "evaluate_keys",
    "evaluate_touched",
    "expire_due",
    "get",
    "history",
    "listings",
    "record",
    "recount_networks",
    "remove",
]
