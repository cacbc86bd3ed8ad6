"""The Postfix policy server over real sockets: the protocol (SMTPD_POLICY_README), the snapshot it answers
from, what it does when the store is away, and malformed requests, which close a connection and leave
the server unharmed. The store is a stand-in callable here; tests/test_enforcement.py runs the real one
behind a real Postfix."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import OperationalError

from blocklist.policyd import PolicyLimits, PolicyServer
from blocklist.snapshot import ListingSnapshot, Row
from tests.conftest import free_ports

PORTAL = "https://delist.example.net/"
FUTURE = datetime.now(UTC) + timedelta(days=1)


def rows(*listed: tuple[str, str], expires: datetime | None = FUTURE) -> list[Row]:
    return [Row(kind, key, True, expires) for kind, key in listed]


class Store:
    """What the server loads its snapshot from: rows, or an outage."""

    def __init__(self, listed: list[Row]) -> None:
        self.listed = listed
        self.down = False
        self.loads = 0

    def __call__(self, held: ListingSnapshot | None) -> ListingSnapshot:
        self.loads += 1
        if self.down:
            raise OperationalError("SELECT", {}, ConnectionRefusedError("connection refused"))
        return ListingSnapshot.of(self.listed)


class Running:
    def __init__(self, server: PolicyServer, port: int) -> None:
        self.server = server
        self.port = port

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def ask(self, client: str, connection: socket.socket | None = None, **attributes: str) -> str:
        own = connection is None
        sock = connection or self.connect()
        try:
            sock.sendall(request(client, **attributes))
            return read_reply(sock)
        finally:
            if own:
                sock.close()


def request(client: str, **attributes: str) -> bytes:
    fields = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": client,
        "client_name": "unknown",
        "helo_name": "spammer.example",
        "sender": "a@sender.example",
        "recipient": "u@test.example",
        "instance": "1a2b.3c4d",
        **attributes,
    }
    return "".join(f"{k}={v}\n" for k, v in fields.items()).encode() + b"\n"


def read_reply(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode() + "<closed>"
        data += chunk
    return data.decode()[:-2]


def closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    started: list[tuple[threading.Thread, asyncio.AbstractEventLoop, asyncio.Event]] = []

    def start(store: Store, **kwargs: object) -> Running:
        server = PolicyServer(store, portal_url=PORTAL, **kwargs)  # type: ignore[arg-type]
        port = free_ports(1)
        ready = threading.Event()
        holder: dict[str, object] = {}

        def run() -> None:
            async def main() -> None:
                stop = asyncio.Event()
                holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
                await server.serve("127.0.0.1", port, stop, ready=lambda _: ready.set())

            asyncio.run(main())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert ready.wait(10)
        started.append((thread, holder["loop"], holder["stop"]))  # type: ignore[arg-type]
        return Running(server, port)

    yield start
    for thread, loop, stop in started:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_a_listed_ip_gets_the_5_7_606_rejection_and_others_dunno(serve: Callable[..., Running]) -> None:
    running = serve(Store(rows(("ip", "192.0.2.7"), ("ip", "2001:db8::7"))))
    assert running.ask("192.0.2.7") == (
        "action=550 5.7.606 Access denied, banned sending IP [192.0.2.7]. To request removal from this list "
        "please visit https://delist.example.net/ and follow the directions."
    )
    assert running.ask("192.0.2.8") == "action=DUNNO"
    assert "[2001:db8::7]" in running.ask("2001:db8::7")
    assert running.ask("2001:DB8:0::7").startswith("action=550 ")  # any spelling of the address
    assert "[192.0.2.7]" in running.ask("::ffff:192.0.2.7")  # IPv4-mapped is the IPv4 address
    assert running.ask("unknown") == "action=DUNNO"


def test_networks_of_any_prefix_cover_their_addresses(serve: Callable[..., Running]) -> None:
    running = serve(
        Store(
            rows(
                ("network", "198.51.100.0/24"), ("network", "203.0.113.64/26"), ("network", "2001:db8:1::/48")
            )
        )
    )
    assert "[198.51.100.200]" in running.ask("198.51.100.200")
    assert running.ask("198.51.101.1") == "action=DUNNO"
    assert running.ask("203.0.113.100").startswith("action=550 ")
    assert running.ask("203.0.113.10") == "action=DUNNO"
    assert running.ask("2001:db8:1:ffff::1").startswith("action=550 ")
    assert running.ask("2001:db8:2::1") == "action=DUNNO"


def test_a_listing_lapses_on_time_between_refreshes(serve: Callable[..., Running]) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1)
    running = serve(Store(rows(("ip", "192.0.2.9"), expires=soon)), refresh=10)
    assert running.ask("192.0.2.9").startswith("action=550 ")
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.1)
    assert running.ask("192.0.2.9") == "action=DUNNO"


def test_one_connection_carries_many_requests_even_pipelined(serve: Callable[..., Running]) -> None:
    running = serve(Store(rows(("ip", "192.0.2.7"))))
    with running.connect() as sock:
        for _ in range(3):
            assert running.ask("192.0.2.7", sock).startswith("action=550 ")
            assert running.ask("192.0.2.1", sock) == "action=DUNNO"
        sock.sendall(request("192.0.2.7") + request("192.0.2.1") + request("192.0.2.7"))
        data = b""
        while data.count(b"\n\n") < 3:
            data += sock.recv(65536)
        answers = data.decode().split("\n\n")[:3]
        assert [a.split()[0] for a in answers] == ["action=550", "action=DUNNO", "action=550"]
        # a request split across many writes, with CRLF line ends
        data = request("192.0.2.7").replace(b"\n", b"\r\n")
        for i in range(0, len(data), 7):
            sock.sendall(data[i : i + 7])
            time.sleep(0.001)
        assert read_reply(sock).startswith("action=550 ")


def test_the_listings_follow_the_store(serve: Callable[..., Running]) -> None:
    store = Store(rows(("ip", "192.0.2.7")))
    running = serve(store, refresh=0.2)
    assert running.ask("192.0.2.7").startswith("action=550 ")
    store.listed = rows(("ip", "192.0.2.8"))
    deadline = time.monotonic() + 5
    while running.ask("192.0.2.7") != "action=DUNNO":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert running.ask("192.0.2.8").startswith("action=550 ")


def test_with_the_store_down_the_last_snapshot_is_kept(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(rows(("ip", "192.0.2.7")))
    running = serve(store, refresh=0.2)
    store.down = True
    loads = store.loads
    with caplog.at_level(logging.WARNING, logger="abusepipe.policy"):
        while store.loads < loads + 3:
            time.sleep(0.05)
        assert running.ask("192.0.2.7").startswith("action=550 ")
        assert running.ask("192.0.2.8") == "action=DUNNO"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # said once, not at every refresh
    assert "keeping the snapshot" in warnings[0] and "1 listings" in warnings[0]
    store.down = False
    with caplog.at_level(logging.WARNING, logger="abusepipe.policy"):
        while store.loads < loads + 6:
            time.sleep(0.05)
    assert any("can be read again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("fail_closed", "answer"), [(False, "action=DUNNO"), (True, "action=451 4.7.1 ")])
def test_without_any_snapshot_it_fails_open_unless_told_otherwise(
    serve: Callable[..., Running], fail_closed: bool, answer: str
) -> None:
    store = Store(rows(("ip", "192.0.2.7")))
    store.down = True
    running = serve(store, fail_closed=fail_closed, refresh=0.2)
    assert running.ask("192.0.2.7").startswith(answer)
    store.down = False
    deadline = time.monotonic() + 5
    while not running.ask("192.0.2.7").startswith("action=550 "):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def garbage() -> bytes:
    data = os.urandom(4096)
    return data.replace(b"=", b"") + b"\n\n"


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(
            lambda: b"request=smtpd_access_policy\nclient_address=" + b"1" * 100_000, id="100KB-line"
        ),
        pytest.param(lambda: b"x" * 100_000 + b"\n\n", id="100KB-line-ended"),
        pytest.param(lambda: b"".join(b"a%d=b\n" % i for i in range(5000)) + b"\n", id="5000-attributes"),
        pytest.param(garbage, id="garbage-bytes"),
        pytest.param(lambda: b"\xff\xfe\x00\n\n", id="binary-line"),
        pytest.param(lambda: b"request=smtpd_access_policy\n" * 20000, id="no-empty-line"),
    ],
)
def test_malformed_requests_close_the_connection_and_harm_nothing(
    serve: Callable[..., Running], attack: Callable[[], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    running = serve(Store(rows(("ip", "192.0.2.7"))))
    with caplog.at_level(logging.WARNING, logger="abusepipe.policy"), running.connect() as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed while we wrote: the point
            sock.sendall(attack())
        assert closed(sock)
    assert any("malformed policy request" in r.getMessage() for r in caplog.records)
    assert running.server.malformed >= 1
    assert running.ask("192.0.2.7").startswith("action=550 ")  # the server is unharmed


def test_a_client_that_goes_away_mid_request_costs_nothing(serve: Callable[..., Running]) -> None:
    running = serve(Store(rows(("ip", "192.0.2.7"))))
    for _ in range(50):
        with running.connect() as sock:
            sock.sendall(b"request=smtpd_access_policy\nclient_addr")
    assert running.ask("192.0.2.7").startswith("action=550 ")
    deadline = time.monotonic() + 5
    while len(running.server.connections) > 0:
        assert time.monotonic() < deadline, len(running.server.connections)
        time.sleep(0.05)


def test_idle_connections_are_closed(serve: Callable[..., Running]) -> None:
    running = serve(Store([]), refresh=0.1, limits=PolicyLimits(idle_timeout=0.3))
    with running.connect() as sock:
        assert closed(sock)


def test_other_request_types_get_dunno(serve: Callable[..., Running]) -> None:
    running = serve(Store(rows(("ip", "192.0.2.7"))))
    assert running.ask("192.0.2.7", request="junk_request") == "action=DUNNO"
