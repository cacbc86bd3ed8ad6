"""Who is asking, and may they: a bearer token (API, scripts) or a session cookie (the browser).

Nothing is anonymous but `/healthz`, the login page and the stylesheet. A state-changing request from a
browser session carries the session's CSRF token; the cookie is HttpOnly, SameSite=Strict, and Secure
under TLS. Failed logins are throttled per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request

from sinks.access import Principal, Role, Session, authenticate, session_of, touch_token
from web.connections import db

COOKIE = "abusepipe_session"
LOGIN_FAILURES = 10
LOGIN_WINDOW = 300.0
TOKEN_CACHE_SECONDS = 2.0


class NotFound(Exception):
    """404: no such report, offender, dead letter or token."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Denied(Exception):
    """401 (who are you?) or 403 (not you)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    session: Session | None
    """The browser session, when the caller came with a cookie rather than a bearer token."""
    client: str


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class TokenCache:
    """Bearer tokens verified in the last TOKEN_CACHE_SECONDS: an API client's every request need not
    read the token table. A revocation or expiry reaches this server within that time (at once for a
    revocation made through it). Keys are the tokens' hashes, never the tokens."""

    def __init__(self, seconds: float = TOKEN_CACHE_SECONDS, size: int = 1024) -> None:
        self._seconds = seconds
        self._size = size
        self._entries: dict[bytes, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            held = self._entries.get(key)
            if held is None or held[0] < time.monotonic():
                return None
            return held[1]

    def put(self, token: str, principal: Principal) -> None:
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            if len(self._entries) >= self._size:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self._seconds, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def identify(request: Request) -> Caller:
    """The caller, else `Denied(401)`."""
    now = datetime.now(UTC)
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise Denied(401, "invalid or expired token")
        tokens: TokenCache = request.app.state.tokens
        principal = tokens.get(token)
        if principal is None:
            with db(request) as connection:
                principal = authenticate(connection, token, now=now, touch=False)
                if principal is None:
                    raise Denied(401, "invalid or expired token")
                if principal.stale:
                    touch_token(connection, principal.token_id, now=now)
                    connection.commit()
            tokens.put(token, principal)
        return Caller(principal, None, client_of(request))
    with db(request) as connection:
        session = session_of(connection, request.cookies.get(COOKIE), now=now)
        if connection.in_transaction() and session is None:
            connection.commit()  # an expired session was deleted
    if session is None:
        raise Denied(401, "authentication required: Authorization: Bearer <token>, or log in")
    return Caller(session.principal, session, client_of(request))


def require(caller: Caller, role: Role) -> None:
    if not caller.principal.may(role):
        raise Denied(403, f"{role} role required (this token is {caller.principal.role})")


async def check_csrf(request: Request, caller: Caller) -> None:
    """A browser's state-changing request must carry its session's CSRF token (bearer calls need none:
    a browser never sends an Authorization header by itself)."""
    if caller.session is None:
        return
    form = await request.form()
    presented = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
    if not hmac.compare_digest(presented.encode(), caller.session.csrf.encode()):
        raise Denied(403, "missing or wrong CSRF token: reload the page and try again")
    origin = request.headers.get("origin")
    if origin and origin != "null" and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise Denied(403, "cross-site request refused")


class LoginThrottle:
    """At most LOGIN_FAILURES failed logins per client address in LOGIN_WINDOW seconds."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allowed(self, client: str) -> bool:
        with self._lock:
            recent = self._recent(client)
            return len(recent) < LOGIN_FAILURES

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(time.monotonic())
            if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
                oldest = min(self._failures, key=lambda c: self._failures[c][-1] if self._failures[c] else 0)
                del self._failures[oldest]

    def _recent(self, client: str) -> deque[float]:
        recent = self._failures.setdefault(client, deque())
        horizon = time.monotonic() - LOGIN_WINDOW
        while recent and recent[0] < horizon:
            recent.popleft()
        return recent
