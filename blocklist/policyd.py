"""A Postfix policy delegation server (SMTPD_POLICY_README) enforcing the blocked-senders list.

Postfix writes `name=value` lines ended by an empty line and reads `action=...` and an empty line back,
over a connection it reuses for many requests. A listed `client_address` (or one inside a listed network)
gets Exchange Online's `550 5.7.606` rejection naming the delist portal; anything else `DUNNO`.

Answers come from an in-memory snapshot (`blocklist.snapshot`) that a background thread refreshes from
the store: a database outage never touches the SMTP path. The store down, the last snapshot is kept and
the outage logged; with no snapshot yet the answer is `DUNNO` (fail open) or, with `fail_closed`,
`451 4.7.1`. A request that breaks the protocol's limits is logged and its connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from abusepipe.errors import AbusepipeError
from blocklist.export import rejection
from blocklist.snapshot import ListingSnapshot, Row, address_text, parse_address
from sinks import models as m

log = logging.getLogger("abusepipe.policy")
L = m.listings
DUNNO = b"action=DUNNO\n\n"
TEMPFAIL = (
    b"action=451 4.7.1 Service unavailable: the blocked-senders list is not loaded; try again later\n\n"
)


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    max_line: int = 8192
    """Bytes in one `name=value` line (Postfix's longest, a client certificate's subject, fits)."""
    max_attributes: int = 200
    """Attributes in one request (Postfix 3.7 sends about 35)."""
    max_request: int = 65536
    idle_timeout: float = 600.0
    """Seconds a connection may sit without a request (Postfix drops its own after 300)."""
    max_connections: int = 4096


class SnapshotSource:
    """Loads the listings in force, then follows what changed, from the store (in a thread)."""

    OVERLAP = timedelta(seconds=15)
    """Changes are re-read this far back: a transaction that committed late with an older `updated_at`
    is still seen (listing transactions last milliseconds; the full reload catches anything else)."""
    FULL_EVERY = 600.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._since: datetime | None = None
        self._next_full = 0.0

    def load(self, snapshot: ListingSnapshot | None) -> ListingSnapshot:
        """A new or updated snapshot; raises SQLAlchemyError when the store cannot be read."""
        now = datetime.now(UTC)
        full = snapshot is None or self._since is None or time.monotonic() >= self._next_full
        kinds = L.c.kind.in_(["ip", "network"])
        with self.engine.connect() as connection:
            newest = connection.execute(select(func.max(L.c.updated_at)).where(kinds)).scalar()
            if full:
                query = select(L.c.kind, L.c.key, L.c.expires_at).where(
                    kinds, L.c.state == "listed", or_(L.c.expires_at.is_(None), L.c.expires_at > now)
                )
                rows = [Row(r.kind, r.key, True, r.expires_at) for r in connection.execute(query)]
                result = ListingSnapshot.of(rows)
                self._next_full = time.monotonic() + self.FULL_EVERY
            else:
                assert snapshot is not None and self._since is not None
                query = select(L.c.kind, L.c.key, L.c.state, L.c.expires_at).where(
                    kinds, L.c.updated_at > self._since - self.OVERLAP
                )
                changed = [
                    Row(r.kind, r.key, r.state == "listed", r.expires_at) for r in connection.execute(query)
                ]
                snapshot.apply(changed)
                result = snapshot
        if newest is not None:
            self._since = newest if newest.tzinfo else newest.replace(tzinfo=UTC)
        elif self._since is None:
            self._since = now
        return result


class PolicyServer:
    def __init__(
        self,
        source: Callable[[ListingSnapshot | None], ListingSnapshot],
        *,
        portal_url: str,
        refresh: float = 5.0,
        fail_closed: bool = False,
        limits: PolicyLimits | None = None,
    ) -> None:
        self.source = source
        self.portal_url = portal_url
        self.refresh = refresh
        self.fail_closed = fail_closed
        self.limits = limits or PolicyLimits()
        self.snapshot: ListingSnapshot | None = None
        self.loaded_at: float | None = None
        self.requests = 0
        self.rejected = 0
        self.malformed = 0
        self.connections: set[PolicyProtocol] = set()
        self._store_down = False
        self._warned_at = 0.0
        self._suppressed = 0

    # --- the snapshot ---------------------------------------------------------------------------------

    def refresh_once(self) -> None:
        """Load or update the snapshot; on failure keep the one held (called from a thread)."""
        try:
            snapshot = self.source(self.snapshot)
        except (SQLAlchemyError, OSError, AbusepipeError) as exc:  # the store, not the server, is at fault
            detail = " ".join(str(exc).split())[:200]
            if not self._store_down:
                held = (
                    f"keeping the snapshot of {time.strftime('%H:%M:%S', time.localtime(self.loaded_at))}"
                    f" ({len(self.snapshot)} listings)"
                    if self.snapshot is not None and self.loaded_at is not None
                    else (
                        "no snapshot yet: answering 451"
                        if self.fail_closed
                        else "no snapshot yet: answering DUNNO"
                    )
                )
                log.warning("the store cannot be read (%s: %s); %s", type(exc).__name__, detail, held)
            self._store_down = True
            return
        if self._store_down:
            log.warning("the store can be read again: %d listings", len(snapshot))
        self._store_down = False
        self.snapshot = snapshot
        self.loaded_at = time.time()

    async def _refresher(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            await loop.run_in_executor(None, self.refresh_once)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.refresh)
            self._close_idle()

    def _close_idle(self) -> None:
        horizon = time.monotonic() - self.limits.idle_timeout
        for connection in [c for c in self.connections if c.last_active < horizon]:
            connection.transport.close()  # type: ignore[union-attr]

    # --- answering ------------------------------------------------------------------------------------

    def answer(self, request: bytes, peer: str) -> bytes | None:
        """The reply to one request (its lines without the empty one), or None to drop the connection."""
        lines = request.split(b"\n")
        if len(lines) > self.limits.max_attributes:
            self.warn(peer, f"{len(lines)} attributes in one request")
            return None
        client = None
        kind = b""
        for line in lines:
            if len(line) > self.limits.max_line:
                self.warn(peer, f"a line of more than {self.limits.max_line} bytes")
                return None
            name, sep, value = line.partition(b"=")
            if not sep or not name:
                self.warn(peer, f"a line that is no name=value ({line[:40]!r})")
                return None
            if name == b"client_address":
                client = value
            elif name == b"request":
                kind = value
        self.requests += 1
        if kind != b"smtpd_access_policy":
            self.warn(peer, f"request={kind[:40]!r} is not smtpd_access_policy")
            return DUNNO
        snapshot = self.snapshot
        if snapshot is None:
            return TEMPFAIL if self.fail_closed else DUNNO
        if client is None:
            return DUNNO
        try:
            address = parse_address(client.decode("ascii"))
        except UnicodeDecodeError:
            address = None
        if address is None or not snapshot.listed(address, time.time()):
            return DUNNO
        self.rejected += 1
        return f"action={rejection(address_text(address), self.portal_url)}\n\n".encode()

    def warn(self, peer: str, what: str) -> None:
        """One line per problem, at most one a second: a flood of garbage must not flood the log."""
        self.malformed += 1
        now = time.monotonic()
        if now - self._warned_at < 1.0:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last line)" if self._suppressed else ""
        log.warning("malformed policy request from %s: %s; connection closed%s", peer, what, more)
        self._warned_at, self._suppressed = now, 0

    # --- serving --------------------------------------------------------------------------------------

    async def serve(
        self, host: str, port: int, stop: asyncio.Event, *, ready: Callable[[Any], None] | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.refresh_once)
        server = await loop.create_server(
            lambda: PolicyProtocol(self), host, port, reuse_address=True, backlog=1024
        )
        refresher = asyncio.create_task(self._refresher(stop))
        if ready is not None:
            ready(server)
        try:
            await stop.wait()
        finally:
            server.close()
            for connection in list(self.connections):
                connection.transport.close()  # type: ignore[union-attr]
            await server.wait_closed()
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher


class PolicyProtocol(asyncio.Protocol):
    """One Postfix connection: requests in, replies out, in order."""

    __slots__ = ("buffer", "last_active", "peer", "server", "transport")

    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one without the subclassing
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        if len(self.server.connections) >= self.server.limits.max_connections:
            self.server.warn(self.peer, "too many connections")
            transport.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self.last_active = time.monotonic()
        buffer = self.buffer + data if self.buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        limits = self.server.limits
        replies: list[bytes] = []
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            if end > limits.max_request:
                break
            reply = self.server.answer(buffer[:end], self.peer)
            buffer = buffer[end + 2 :]
            if reply is None:
                transport.write(b"".join(replies))
                transport.close()
                return
            replies.append(reply)
        if replies:
            transport.write(b"".join(replies))
        if len(buffer) > limits.max_request:
            self._drop(f"a request of more than {limits.max_request} bytes")
            return
        last_line = len(buffer) - (buffer.rfind(b"\n") + 1)
        if last_line > limits.max_line:
            self._drop(f"a line of more than {limits.max_line} bytes")
            return
        self.buffer = buffer

    def _drop(self, why: str) -> None:
        self.server.warn(self.peer, why)
        self.buffer = b""
        if self.transport is not None:
            self.transport.close()


def run_forever(
    server: PolicyServer, host: str, port: int, *, stop_flag: threading.Event, ready: Callable[[Any], None]
) -> None:
    """Serve until `stop_flag` is set (by a signal handler in the CLI). On uvloop where it is installed
    (a third more lookups per CPU-second than asyncio's own loop here)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def watch() -> None:
            stop_flag.wait()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch, name="policy-stop", daemon=True).start()
        await server.serve(host, port, stop, ready=ready)

    try:
        import uvloop  # noqa: PLC0415 (an optional speed-up)

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
