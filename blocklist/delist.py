"""Delisting requests: a sender asks, proves the address by a single-use link, and is delisted within
limits; what falls outside them waits for an analyst.

The rules (each limit a setting):
- one e-mail address and one IP per request; a link is random (256 bits), stored as its SHA-256, valid
  for 30 minutes and used once;
- self-service when every listing in force that covers the IP is an automatic listing of that IP and the
  IP was delisted by its sender fewer than 2 times in 30 days; otherwise (a network listing, a manual
  listing, the quota used) the request joins the analyst queue and the listing's history says so;
- a delisting is an event like any other: evidence after it lists the IP again, with the escalated TTL.

Functions take an open connection and write inside the caller's transaction; none sends mail (the caller
queues it in the outbox in the same transaction, so a request and its mail are stored together or not).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import idna
from sqlalchemy import Connection, and_, bindparam, desc, func, insert, select, update

from abusepipe.errors import AbusepipeError, ConfigError
from blocklist import listings
from blocklist.evidence import exact_counts, last_seen
from blocklist.listings import Change, Listing
from blocklist.policy import ListingPolicy
from sinks import models as m
from sinks.queries import utc

R = m.delist_requests
QUOTA_WINDOW = timedelta(days=30)
STATES = ("mailed", "delisted", "queued", "approved", "refused", "not-listed")
SENDER = "delisted-by-sender"


class RequestRefused(AbusepipeError):
    """The request cannot be taken (bad input, a rate limit, nothing to delist); `code` names why for
    the page, which words it in the requester's language."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class LinkInvalid(AbusepipeError):
    """A confirmation link that is unknown, used, expired or not for this IP."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class RequestLimits:
    link_lifetime: timedelta = timedelta(minutes=30)
    self_delistings: int = 2
    """Self-service delistings of one IP per QUOTA_WINDOW; the next request goes to review."""
    per_email_per_day: int = 5
    per_ip_per_day: int = 5
    per_client_per_hour: int = 10
    """Requests made from one address (an IPv6 client's /64) in an hour."""


# --- input ----------------------------------------------------------------------------------------------

_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")
_DOMAIN = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
)


def clean_email(text: str) -> str:
    """A plain `local@domain` address, or RequestRefused: nothing a mail header could be injected with
    (no CR/LF, no display name, no comments, no quoted local parts), an internationalized domain in its
    ASCII form."""
    value = (text or "").strip()
    if not value or len(value) > 254 or any(ch in value for ch in '\r\n\0<>"(), ;:\\[]'):
        raise RequestRefused("bad-email", "not an e-mail address")
    local, _, domain = value.rpartition("@")
    try:
        domain = domain if domain.isascii() else idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise RequestRefused("bad-email", "not an e-mail address") from None
    if (
        not _LOCAL.fullmatch(local)
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
        or not _DOMAIN.fullmatch(domain)
    ):
        raise RequestRefused("bad-email", "not an e-mail address")
    return f"{local}@{domain.lower()}"


def clean_ip(text: str) -> str:
    try:
        address = ipaddress.ip_address((text or "").strip().strip("[]"))
    except ValueError:
        raise RequestRefused("bad-ip", "not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


# --- what the portal shows --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """An IP's public status: counts and dates only, never who reported it or which trap caught it."""

    ip: str
    listings: tuple[Listing, ...]
    reporters: int
    traps: int
    since: datetime
    last_seen: datetime | None
    history: tuple[Change, ...]
    self_service: bool
    """Whether a confirmed request would delist it at once (else it goes to review)."""
    never: str | None

    @property
    def listed(self) -> bool:
        return bool(self.listings)

    @property
    def until(self) -> datetime | None:
        ends = [x.expires_at for x in self.listings]
        return None if any(end is None for end in ends) else max(e for e in ends if e is not None)

    def document(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "ip": self.ip,
            "listed": self.listed,
            "until": iso(self.until) if self.listed else None,
            "listings": [
                {
                    "kind": x.kind,
                    "key": x.key,
                    "origin": x.origin,
                    "reason_code": x.reason_code,
                    "reason": public_reason(x),
                    "listed_at": iso(x.listed_at),
                    "expires_at": iso(x.expires_at),
                }
                for x in self.listings
            ],
            "evidence": {
                "since": iso(self.since),
                "reporters": self.reporters,
                "traps": self.traps,
                "last_seen": iso(self.last_seen),
            },
            "history": [{"event": c.event, "at": iso(c.at)} for c in self.history],
            "self_service": self.self_service,
        }


def public_reason(listing: Listing) -> str | None:
    """The policy's own words (counts and a window); an analyst's free text may name people or tickets,
    so a manual listing shows none."""
    return listing.reason if listing.origin == "policy" else None


def sender_delistings(connection: Connection, ip: str, now: datetime) -> int:
    e = m.listing_events
    query = select(func.count()).where(
        e.c.kind == "ip", e.c.key == ip, e.c.event == SENDER, e.c.at > now - QUOTA_WINDOW
    )
    return int(connection.execute(query).scalar() or 0)


def self_service(
    connection: Connection,
    ip: str,
    found: list[Listing],
    limits: RequestLimits,
    now: datetime,
    *,
    history: list[Change] | None = None,
) -> bool:
    """Whether a confirmed request delists at once: every listing covering the IP is an automatic
    listing of it, and its sender delisted it fewer than the limit in QUOTA_WINDOW. `history`: the
    public history already read (the count is taken from it when it is complete)."""
    if not found or any(x.kind != "ip" or x.origin != "policy" for x in found):
        return False
    if history is not None and len(history) < HISTORY:
        count = sum(1 for c in history if c.event == SENDER and c.at > now - QUOTA_WINDOW)
    else:
        count = sender_delistings(connection, ip, now)
    return count < limits.self_delistings


HISTORY = 50
_HISTORY = (
    select(m.listing_events.c.event, m.listing_events.c.at)
    .where(
        m.listing_events.c.kind == "ip",
        m.listing_events.c.key == bindparam("ip"),
        m.listing_events.c.event != "extended",
    )
    .order_by(desc(m.listing_events.c.at), desc(m.listing_events.c.id))
    .limit(HISTORY)
)


def public_history(connection: Connection, ip: str) -> list[Change]:
    """What happened to an IP's listing, without the hourly `extended` notes (and never who or why:
    the page words each event itself)."""
    rows = connection.execute(_HISTORY, {"ip": ip})
    return [Change("ip", ip, row.event, "", "", utc(row.at)) for row in rows]


def status(
    connection: Connection, policy: ListingPolicy, limits: RequestLimits, ip: str, now: datetime
) -> Status:
    """Two indexed queries for an IP never listed nor reported (most lookups), a few more otherwise."""
    ip = clean_ip(ip)
    near = listings.around(connection, ip)
    found = [x for x in near if x.in_force(now)]
    own = next((x for x in near if x.kind == "ip"), None)
    ended = own.ended(now) if own is not None else None
    since = now - policy.window
    start = max(since, ended) if ended is not None else since
    newest = last_seen(connection, "ip", ip)
    reporters, traps = exact_counts(connection, "ip", ip, start) if newest and newest > start else (0, 0)
    history = public_history(connection, ip) if own is not None else []
    allowed = self_service(connection, ip, found, limits, now, history=history)
    return Status(
        ip=ip,
        listings=tuple(found),
        reporters=reporters,
        traps=traps,
        since=start,
        last_seen=newest,
        history=tuple(history),
        self_service=allowed,
        never=policy.never("ip", ip),
    )


# --- asking -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DelistRequest:
    id: int
    ip: str
    email: str
    lang: str
    state: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    decided_at: datetime | None
    decided_by: str | None
    decision: str | None

    @classmethod
    def of(cls, row: Any) -> DelistRequest:
        return cls(
            id=row.id,
            ip=row.ip,
            email=row.email,
            lang=row.lang,
            state=row.state,
            created_at=utc(row.created_at),
            expires_at=utc(row.expires_at),
            used_at=utc(row.used_at) if row.used_at is not None else None,
            decided_at=utc(row.decided_at) if row.decided_at is not None else None,
            decided_by=row.decided_by,
            decision=row.decision,
        )

    def document(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "ip": self.ip,
            "email": self.email,
            "state": self.state,
            "created_at": iso(self.created_at),
            "confirmed_at": iso(self.used_at),
            "decided_at": iso(self.decided_at),
            "decided_by": self.decided_by,
            "decision": self.decision,
        }


def _recent(connection: Connection, column: Any, value: str, since: datetime) -> int:
    query = select(func.count()).where(column == value, R.c.created_at > since)
    return int(connection.execute(query).scalar() or 0)


def create(
    connection: Connection,
    *,
    ip: str,
    email: str,
    client: str,
    lang: str,
    limits: RequestLimits,
    now: datetime,
) -> tuple[DelistRequest, str]:
    """A new request for a listed IP and its link's secret (returned once, stored hashed)."""
    ip, email = clean_ip(ip), clean_email(email)
    if _recent(connection, R.c.client, client[:64], now - timedelta(hours=1)) >= limits.per_client_per_hour:
        raise RequestRefused("rate-client", "too many requests from this address; try again in an hour")
    if not listings.covering(connection, ip, now):
        raise RequestRefused("not-listed", f"{ip} is not listed")
    day = now - timedelta(days=1)
    if _recent(connection, R.c.email, email, day) >= limits.per_email_per_day:
        raise RequestRefused("rate-email", "too many requests for this address today")
    if _recent(connection, R.c.ip, ip, day) >= limits.per_ip_per_day:
        raise RequestRefused("rate-ip", "too many requests for this IP today")
    token = secrets.token_urlsafe(32)
    values = {
        "ip": ip,
        "email": email,
        "token_hash": token_hash(token),
        "lang": lang[:8],
        "client": client[:64],
        "created_at": now,
        "expires_at": now + limits.link_lifetime,
        "state": "mailed",
    }
    new_id = connection.execute(insert(R).values(**values).returning(R.c.id)).scalar_one()
    request = get(connection, new_id)
    assert request is not None
    return request, token


def by_token(connection: Connection, token: str, now: datetime) -> DelistRequest:
    """The request a link belongs to, if the link may still be used."""
    if not token or len(token) > 100:
        raise LinkInvalid("unknown", "no such link")
    row = connection.execute(select(R).where(R.c.token_hash == token_hash(token))).first()
    if row is None or not hmac.compare_digest(row.token_hash, token_hash(token)):
        raise LinkInvalid("unknown", "no such link")
    request = DelistRequest.of(row)
    if request.used_at is not None:
        raise LinkInvalid("used", "this link was used already")
    if request.expires_at <= now:
        raise LinkInvalid("expired", "this link has expired")
    return request


def get(connection: Connection, request_id: int) -> DelistRequest | None:
    row = connection.execute(select(R).where(R.c.id == request_id)).first()
    return DelistRequest.of(row) if row is not None else None


def pending(connection: Connection, *, state: str | None = "queued", limit: int = 200) -> list[DelistRequest]:
    query = select(R)
    if state is not None:
        if state not in STATES:
            raise ConfigError(f"--state {state!r}: choose one of {', '.join(STATES)}")
        query = query.where(R.c.state == state)
    query = query.order_by(desc(R.c.created_at), desc(R.c.id)).limit(limit)
    return [DelistRequest.of(row) for row in connection.execute(query)]


def confirm(
    connection: Connection,
    policy: ListingPolicy,
    limits: RequestLimits,
    *,
    token: str,
    ip: str,
    now: datetime,
) -> tuple[DelistRequest, str]:
    """Use a link once: delist at once when self-service allows it (`delisted`), else queue it for an
    analyst (`queued`); `not-listed` when nothing covers the IP any more."""
    request = by_token(connection, token, now)
    if clean_ip(ip) != request.ip:
        raise LinkInvalid("other-ip", "this link is for another IP")
    used = connection.execute(
        update(R)
        .where(and_(R.c.id == request.id, R.c.used_at.is_(None), R.c.expires_at > now))
        .values(used_at=now)
    )
    if used.rowcount != 1:  # another tab or a replay won the race
        raise LinkInvalid("used", "this link was used already")
    found = listings.covering(connection, request.ip, now)
    actor = f"sender:{request.email}"[:100]
    if not found:
        outcome = "not-listed"
    elif self_service(connection, request.ip, found, limits, now):
        listings.remove(
            connection,
            policy,
            "ip",
            request.ip,
            reason=f"self-service delisting (request {request.id})",
            actor=actor,
            now=now,
            event=SENDER,
        )
        outcome = "delisted"
    else:
        for listing in found:
            listings.record(
                connection,
                Change(
                    listing.kind,
                    listing.key,
                    "delist-requested",
                    f"request {request.id} for {request.ip} waits for review",
                    actor,
                    now,
                ),
            )
        outcome = "queued"
    connection.execute(update(R).where(R.c.id == request.id).values(state=outcome))
    return request, outcome


def decide(
    connection: Connection,
    policy: ListingPolicy,
    request_id: int,
    *,
    approve: bool,
    reason: str,
    actor: str,
    now: datetime,
) -> tuple[DelistRequest, list[Change]]:
    """An analyst's decision on a queued request: approve delists every listing that covers the IP."""
    reason = " ".join((reason or "").split())[:500]
    if not reason:
        raise ConfigError("a decision needs a reason: the requester is told it")
    request = get(connection, request_id)
    if request is None:
        raise ConfigError(f"no delisting request {request_id}")
    if request.state != "queued":
        raise ConfigError(f"request {request_id} is {request.state}, not waiting for review")
    changes: list[Change] = []
    found = listings.covering(connection, request.ip, now)
    if approve:
        for listing in found:
            changes += listings.remove(
                connection,
                policy,
                listing.kind,
                listing.key,
                reason=f"request {request.id} approved: {reason}",
                actor=actor,
                now=now,
            )
    else:
        for listing in found:
            changes.append(
                listings.record(
                    connection,
                    Change(
                        listing.kind,
                        listing.key,
                        "refused",
                        f"request {request.id} refused: {reason}",
                        actor,
                        now,
                    ),
                )
            )
    state = "approved" if approve else "refused"
    done = connection.execute(
        update(R)
        .where(and_(R.c.id == request.id, R.c.state == "queued"))
        .values(state=state, decided_at=now, decided_by=actor[:100], decision=reason)
    )
    if done.rowcount != 1:
        raise ConfigError(f"request {request_id} was decided by someone else meanwhile")
    decided = get(connection, request.id)
    assert decided is not None
    return decided, changes
