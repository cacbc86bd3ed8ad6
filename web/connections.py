"""One database connection per request (the console and the portal), shared by authentication, the
queries and the audit row.

A console request used to check out three pooled connections (who is asking, what they asked for, the
audit row), each with its pre-ping and its own transaction: twelve round trips where five do. The
connection is opened on first use (`/healthz` and static files never touch the store), writes commit where
they are made (`db(request, write=True)`), and whatever is left is rolled back and returned to the pool
when the response has been sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import anyio.to_thread
from fastapi import Request
from sqlalchemy import Connection, Engine
from starlette.types import ASGIApp, Receive, Scope, Send

from sinks.store import ReportStore, store_errors

_KEY = "abusepipe.connection"
log = logging.getLogger("abusepipe.web")


def store_of(request: Request) -> ReportStore:
    store: ReportStore = request.app.state.store
    return store


@contextmanager
def db(request: Request, *, write: bool = False) -> Iterator[Connection]:
    """The request's connection; with `write`, what the block did is committed when it ends."""
    state = request.scope.setdefault("state", {})
    with store_errors("store query failed"):
        connection: Connection | None = state.get(_KEY)
        if connection is None or connection.closed:
            connection = store_of(request).engine.connect()
            state[_KEY] = connection
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        if write:
            connection.commit()


_AUTOCOMMIT: dict[int, Engine] = {}


def _autocommit(engine: Engine) -> Engine:
    """The engine's autocommit twin (sharing its pool), made once."""
    twin = _AUTOCOMMIT.get(id(engine))
    if twin is None or twin.pool is not engine.pool:
        twin = _AUTOCOMMIT[id(engine)] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return twin


@contextmanager
def reads(request: Request) -> Iterator[Connection]:
    """A connection for reads that need no transaction (each statement sees the latest commit): no
    BEGIN and no ROLLBACK around them, two round trips fewer for a page that only looks things up."""
    with store_errors("store query failed"), _autocommit(store_of(request).engine).connect() as connection:
        yield connection  # back to the pool in this thread: no hop to another to return it


class RequestConnections:
    """ASGI middleware: returns the request's connection to the pool once the response is out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            state = scope.get("state", {})
            connection = state.pop(_KEY, None)
            if connection is not None:
                await anyio.to_thread.run_sync(_release, connection)


def _release(connection: Connection) -> None:
    try:
        connection.close()  # rolls back what was only read
    except Exception as exc:  # the response is out; a broken connection is dropped from the pool
        log.warning("releasing a store connection: %s: %s", type(exc).__name__, exc)
        connection.invalidate()
