"""`abusepipe smtp`: an SMTP (or LMTP) endpoint for the abuse addresses, built on aiosmtpd.

Only configured recipients are accepted (it is never a relay); each recipient routes to how its mail is
read (`phish@` → fraud, `trap@` → trap mode). `250` is answered only once the message is durable —
stored, or acknowledged by the broker — `451` when it could not be made durable now (the sender keeps
it and retries), `550`/`552` for what will never be accepted (unknown recipient, over the size limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from abusepipe.errors import ConfigError
from ingest.live import IntakeCounters, LiveIntake, MessageLog, message_id_of, settle
from ingest.runner import ParseOptions
from ingest.sources import RawMessage
from schemas import FEEDBACK_TYPES

ROUTES = ("auto", "trap", *sorted(FEEDBACK_TYPES))
MAX_LINE = 256 * 1024


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    options: ParseOptions


def make_routes(recipients: Mapping[str, str], base: ParseOptions) -> dict[str, Route]:
    """`{address: route}` → routes by lower-case address. A route is `auto` (read the mail as it
    comes), `trap` (each message is the junk itself) or a feedback type forced on its reports."""
    routes: dict[str, Route] = {}
    for address, name in recipients.items():
        key, route = address.strip().lower(), name.strip().lower()
        if "@" not in key or key.startswith("@") or key.endswith("@"):
            raise ConfigError(f"recipient {address!r}: not an address (local@domain)")
        if route not in ROUTES:
            raise ConfigError(f"recipient {address}: unknown route {name!r} (one of: {', '.join(ROUTES)})")
        if route == "trap":
            options = replace(base, trap=True)
        elif route == "auto":
            options = base
        else:
            options = replace(base, feedback_type=route)
        routes[key] = Route(route, options)
    if not routes:
        raise ConfigError(
            "no recipient configured: give --recipient ADDRESS[=ROUTE] (abuse@example.net=auto)"
        )
    return routes


class IntakeHandler:
    """aiosmtpd handler: recipients checked at RCPT, the message made durable at DATA."""

    def __init__(
        self,
        intake: LiveIntake,
        routes: dict[str, Route],
        counters: IntakeCounters,
        log: MessageLog,
        *,
        lmtp: bool = False,
    ) -> None:
        self.intake = intake
        self.routes = routes
        self.counters = counters
        self.log = log
        self.lmtp = lmtp
        self.active = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        route = self.routes.get(address.lower())
        if route is None:
            self.counters.add(rejected=1)
            self.log.message(
                source=_peer(session),
                message_id=None,
                outcome="rejected",
                reason=f"recipient <{address}> not accepted",
            )
            return f"550 5.1.1 <{address}>: no such abuse address here"
        if envelope.rcpt_tos and self.routes[envelope.rcpt_tos[0].lower()].name != route.name:
            # Each message is read one way: the client sends it again to this recipient alone.
            return "452 4.5.3 one kind of recipient per message: send to this one separately"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        rcpts = list(envelope.rcpt_tos)
        route = self.routes[rcpts[0].lower()]
        source = f"smtp:{_peer(session)} from <{envelope.mail_from}> to <{rcpts[0]}>"
        message_id = message_id_of(raw)
        self.counters.add(received=1)
        self.active += 1
        try:
            future = self.intake.submit(RawMessage(raw, source), route.options)
            await asyncio.wait([asyncio.wrap_future(future)])  # its failure is settled below
        finally:
            self.active -= 1
        outcome = settle(future, self.counters, self.log, source=source, message_id=message_id)
        if outcome is None:  # not durable: the sender keeps the message and retries
            return self._reply("451 4.3.0 not stored now; try again later", rcpts)
        if outcome.dead_letter is not None:
            return self._reply("250 2.0.0 kept, but not an abuse report: dead-lettered", rcpts)
        return self._reply(f"250 2.0.0 stored: {outcome.reports} report(s)", rcpts)

    def _reply(self, line: str, rcpts: list[str]) -> str:
        # LMTP answers DATA once per recipient.
        return "\r\n".join([line] * len(rcpts)) if self.lmtp else line


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "unknown")


class LenientSMTP(SMTP):
    """Reports quote junk verbatim, lines of several KB included: RFC 5321's 1,000-octet line limit
    would refuse them (and lose them at the sender). The message size limit still bounds memory."""

    line_length_limit = MAX_LINE


class LenientLMTP(LMTP):
    line_length_limit = MAX_LINE


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    host: str = "127.0.0.1"
    port: int = 2525
    lmtp: bool = False
    max_message_bytes: int = 32 * 1024 * 1024
    hostname: str | None = None
    tls: ssl.SSLContext | None = None
    require_starttls: bool = False


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {cert} / key {key}: {exc}") from exc
    return context


async def serve(
    handler: IntakeHandler,
    options: SmtpOptions,
    *,
    stop: asyncio.Event | None = None,
    ready: Any = None,
    stats_interval: float = 60.0,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop`), then let the messages in flight finish."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread (tests) signals cannot be handled: the caller sets `stop`.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    protocol = LenientLMTP if options.lmtp else LenientSMTP

    def factory() -> SMTP:
        return protocol(
            handler,
            data_size_limit=options.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=options.hostname,
            ident="abusepipe",
            tls_context=options.tls,
            require_starttls=options.require_starttls,
        )

    try:
        server = await loop.create_server(factory, options.host, options.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from exc
    kind = "LMTP" if options.lmtp else "SMTP"
    handler.log.text(
        f"{kind} listening on {options.host}:{options.port} for {', '.join(sorted(handler.routes))}"
    )
    if ready is not None:
        ready()
    last = handler.counters.snapshot()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=stats_interval)
        except TimeoutError:
            now = handler.counters.snapshot()
            if now != last:
                handler.log.text(f"so far: {handler.counters.line()}")
                last = now
    server.close()
    await server.wait_closed()
    for _ in range(300):  # up to 30 s for messages in flight to become durable and be answered
        if handler.active == 0:
            break
        await asyncio.sleep(0.1)
    handler.log.text(f"stopped: {handler.counters.line()}")
