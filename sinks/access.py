"""Who may read the store through the console and API: tokens, browser sessions, and the audit log.

A token is `abp_<id>_<secret>`: the id finds its row, the secret is kept only as a SHA-256 and compared in
constant time. It is shown once, when created. A browser session is the same shape (`<id>.<secret>`) in a
cookie, tied to the token that logged in: revoking the token ends its sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Connection, delete, desc, insert, select, update
from sqlalchemy.exc import IntegrityError

from abusepipe.errors import ConfigError
from sinks import models as m
from sinks.queries import utc

Role = Literal["viewer", "analyst", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "analyst", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES)}
_TOKEN = re.compile(r"abp_(\d{1,10})_([A-Za-z0-9_-]{20,100})")
_SESSION = re.compile(r"([0-9a-f]{32})\.([A-Za-z0-9_-]{20,100})")
SESSION_LIFETIME = timedelta(hours=12)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a token's name and role."""

    token_id: int
    name: str
    role: Role
    stale: bool = field(default=False, compare=False)
    """Its token's last use is older than TOUCH_EVERY: to be recorded."""

    def may(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    role: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and utc(datetime.fromisoformat(self.expires_at)) <= datetime.now(UTC):
            return "expired"
        return "active"


def create_token(
    connection: Connection, name: str, role: str, *, now: datetime, expires: timedelta | None = None
) -> str:
    """A new token (returned once, never stored in clear)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ConfigError("a token needs a name of 1 to 100 characters")
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    secret = secrets.token_urlsafe(32)
    try:
        token_id = connection.execute(
            insert(m.api_tokens)
            .values(
                name=name,
                role=role,
                secret_sha256=_hash(secret),
                created_at=now,
                expires_at=now + expires if expires else None,
            )
            .returning(m.api_tokens.c.id)
        ).scalar_one()
    except IntegrityError as exc:
        raise ConfigError(f"a token named {name!r} exists already") from exc
    return f"abp_{token_id}_{secret}"


TOUCH_EVERY = timedelta(minutes=5)
"""A token's `last_used_at` is written at most this often: not a write per request."""


def authenticate(
    connection: Connection, presented: str | None, *, now: datetime, touch: bool = True
) -> Principal | None:
    """The principal of a valid token (not revoked, not expired), else None. Without `touch`, the caller
    records the use (`touch_token`) when `Principal.stale` says so."""
    match = _TOKEN.fullmatch((presented or "").strip())
    if match is None:
        return None
    t = m.api_tokens
    row = connection.execute(select(t).where(t.c.id == int(match.group(1)))).first()
    if row is None or not hmac.compare_digest(row.secret_sha256, _hash(match.group(2))):
        return None
    if row.revoked_at is not None or (row.expires_at is not None and utc(row.expires_at) <= now):
        return None
    last = utc(row.last_used_at) if row.last_used_at is not None else None
    stale = last is None or now - last > TOUCH_EVERY
    if stale and touch:
        touch_token(connection, row.id, now=now)
        stale = False
    return Principal(row.id, row.name, row.role, stale=stale)


def touch_token(connection: Connection, token_id: int, *, now: datetime) -> None:
    t = m.api_tokens
    connection.execute(update(t).where(t.c.id == token_id).values(last_used_at=now))


def list_tokens(connection: Connection) -> list[TokenInfo]:
    t = m.api_tokens
    rows = connection.execute(select(t).order_by(t.c.id)).all()
    return [
        TokenInfo(
            r.id,
            r.name,
            r.role,
            _iso(r.created_at) or "",
            _iso(r.expires_at),
            _iso(r.revoked_at),
            _iso(r.last_used_at),
        )
        for r in rows
    ]


def revoke_token(connection: Connection, which: str, *, now: datetime) -> TokenInfo | None:
    """Revoke a token by name or id; its browser sessions end with it."""
    t = m.api_tokens
    condition = t.c.id == int(which) if which.isdigit() else t.c.name == which
    row = connection.execute(select(t).where(condition)).first()
    if row is None:
        return None
    connection.execute(update(t).where(t.c.id == row.id, t.c.revoked_at.is_(None)).values(revoked_at=now))
    connection.execute(delete(m.web_sessions).where(m.web_sessions.c.token_id == row.id))
    return next(info for info in list_tokens(connection) if info.id == row.id)


@dataclass(frozen=True, slots=True)
class Session:
    cookie: str
    csrf: str
    principal: Principal


def open_session(connection: Connection, principal: Principal, *, now: datetime) -> Session:
    session_id = secrets.token_hex(16)
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    connection.execute(
        insert(m.web_sessions).values(
            id=session_id,
            secret_sha256=_hash(secret),
            token_id=principal.token_id,
            csrf=csrf,
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    connection.execute(delete(m.web_sessions).where(m.web_sessions.c.expires_at < now))
    return Session(f"{session_id}.{secret}", csrf, principal)


def session_of(connection: Connection, cookie: str | None, *, now: datetime) -> Session | None:
    """The live session of a cookie whose token is still valid, else None."""
    match = _SESSION.fullmatch(cookie or "")
    if match is None:
        return None
    s, t = m.web_sessions, m.api_tokens
    row = connection.execute(
        select(s, t.c.name, t.c.role, t.c.revoked_at, t.c.expires_at.label("token_expires"))
        .join(t, t.c.id == s.c.token_id)
        .where(s.c.id == match.group(1))
    ).first()
    if row is None or not hmac.compare_digest(row.secret_sha256, _hash(match.group(2))):
        return None
    if utc(row.expires_at) <= now or row.revoked_at is not None:
        return None
    if row.token_expires is not None and utc(row.token_expires) <= now:
        return None
    return Session(cookie or "", row.csrf, Principal(row.token_id, row.name, row.role))


def close_session(connection: Connection, cookie: str | None) -> None:
    match = _SESSION.fullmatch(cookie or "")
    if match is not None:
        connection.execute(delete(m.web_sessions).where(m.web_sessions.c.id == match.group(1)))


def audit(
    connection: Connection, *, actor: str, action: str, target: str, client: str, now: datetime
) -> None:
    connection.execute(
        insert(m.audit_log).values(
            at=now, actor=actor[:100], action=action[:40], target=target[:2000], client=client[:64]
        )
    )


def create_audited(
    connection: Connection,
    name: str,
    role: str,
    *,
    actor: str,
    client: str,
    now: datetime,
    expires: timedelta | None = None,
) -> str:
    """A new token and the audit row that says who made it (the CLI, the API and the console's page)."""
    token = create_token(connection, name, role, now=now, expires=expires)
    audit(connection, actor=actor, action="token-create", target=f"{name} ({role})", client=client, now=now)
    return token


def revoke_audited(
    connection: Connection, which: str, *, actor: str, client: str, now: datetime
) -> TokenInfo | None:
    """Revoke a token and write the audit row (nothing when there is no such token)."""
    info = revoke_token(connection, which, now=now)
    if info is not None:
        audit(connection, actor=actor, action="token-revoke", target=info.name, client=client, now=now)
    return info


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    target: str
    client: str


def audit_entries(connection: Connection, *, limit: int = 100) -> list[AuditEntry]:
    a = m.audit_log
    rows = connection.execute(select(a).order_by(desc(a.c.id)).limit(limit)).all()
    return [AuditEntry(r.id, _iso(r.at) or "", r.actor, r.action, r.target, r.client) for r in rows]


def _iso(moment: datetime | None) -> str | None:
    return utc(moment).isoformat() if moment is not None else None


def parse_lifetime(text: str) -> timedelta:
    """`90d`, `12h`, `2w` as a timedelta."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*([hdw])\s*", text or "", re.IGNORECASE)
    if match is None:
        raise ConfigError(f"{text!r} is not a duration such as 12h, 90d or 2w")
    amount, unit = int(match.group(1)), match.group(2).lower()
    return {"h": timedelta(hours=amount), "d": timedelta(days=amount), "w": timedelta(weeks=amount)}[unit]
