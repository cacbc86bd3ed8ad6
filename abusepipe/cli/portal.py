"""The delist portal `portal`, the analyst queue `blocklist requests list|approve|refuse` (added to the
`blocklist` group), and the outgoing mail `outbox list|flush`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from abusepipe.cli.common import (
    EXIT_OK,
    cli_actor,
    display_url,
    free_to_listen,
    listen_address,
    open_store,
    positive,
    say,
    store_option,
    store_url,
)
from abusepipe.errors import ConfigError
from abusepipe.output import FORMATS, render

if TYPE_CHECKING:
    from abusepipe.settings import Settings
    from blocklist.delist import RequestLimits
    from sinks.mailer import MailRelay, OutboxSender
    from sinks.store import ReportStore

REQUEST_COLUMNS = [
    "id",
    "ip",
    "email",
    "state",
    "created_at",
    "confirmed_at",
    "decided_at",
    "decided_by",
    "decision",
]
OUTBOX_COLUMNS = [
    "id",
    "recipient",
    "purpose",
    "attempts",
    "created_at",
    "sent_at",
    "next_attempt_at",
    "last_error",
]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    portal = commands.add_parser("portal", help="the public self-service delist portal (HTTP)")
    portal.add_argument(
        "--listen", metavar="HOST:PORT", help="default: ABUSEPIPE_PORTAL_LISTEN or 127.0.0.1:8081"
    )
    portal.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes serving it (default: ABUSEPIPE_PORTAL_WORKERS or 1)",
    )
    portal.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="trust X-Forwarded-For/-Proto from these proxies (comma-separated; default: none)",
    )
    store_option(portal)
    portal.set_defaults(run=run_portal)

    box = commands.add_parser("outbox", help="outgoing mail: what waits, what was sent")
    actions = box.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the newest mails (never their bodies)")
    listing.add_argument("--unsent", action="store_true", help="only mails not delivered yet")
    listing.add_argument("--limit", type=positive, default=100)
    listing.add_argument("--format", choices=FORMATS, default="table")
    store_option(listing)
    listing.set_defaults(run=run_outbox_list)
    flush = actions.add_parser("flush", help="deliver every unsent mail now through ABUSEPIPE_MAIL_RELAY")
    store_option(flush)
    flush.set_defaults(run=run_outbox_flush)


def add_request_commands(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`blocklist requests ...`: the delisting requests that wait for an analyst."""
    requests = actions.add_parser("requests", help="delisting requests from the portal (the review queue)")
    verbs = requests.add_subparsers(dest="verb", required=True, metavar="ACTION")
    listing = verbs.add_parser("list", help="requests (default: those waiting for review)")
    listing.add_argument(
        "--state",
        default="queued",
        choices=["queued", "mailed", "delisted", "approved", "refused", "not-listed", "all"],
    )
    listing.add_argument("--limit", type=positive, default=200)
    listing.add_argument("--format", choices=FORMATS, default="table")
    store_option(listing)
    listing.set_defaults(run=run_requests_list)
    for verb, approve in (("approve", True), ("refuse", False)):
        decide = verbs.add_parser(
            verb,
            help="delist what covers the IP and tell the requester" if approve else "tell the requester no",
        )
        decide.add_argument("id", type=int, metavar="ID")
        decide.add_argument("--reason", required=True, help="sent to the requester")
        store_option(decide)
        decide.set_defaults(run=run_requests_decide, approve=approve)


def limits_of(settings: Settings) -> RequestLimits:
    from web.portal.app import limits_of as portal_limits

    return portal_limits(settings)


def relay_of(settings: Settings) -> MailRelay | None:
    from web.portal.app import relay_of as portal_relay

    return portal_relay(settings)


def sender_of(store: ReportStore, settings: Settings) -> OutboxSender:
    from sinks.mailer import OutboxSender

    return OutboxSender(store, relay_of(settings), first_retry=settings.mail_retry_seconds)


def _check_mail_from(settings: Settings) -> None:
    value = settings.mail_from
    if "@" not in value or any(ch in value for ch in '\r\n\0<>" ,;'):
        raise ConfigError(
            f"ABUSEPIPE_MAIL_FROM {value[:80]!r}: give a plain address, e.g. delist@example.net"
        )


def run_portal(args: argparse.Namespace, settings: Settings) -> int:
    import os
    import secrets

    import uvicorn

    host, port = listen_address(args.listen or settings.portal_listen, "--listen", default_host="127.0.0.1")
    free_to_listen(host, port)
    if not settings.portal_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"ABUSEPIPE_PORTAL_URL {settings.portal_url!r}: give the portal's public http(s) URL"
        )
    _check_mail_from(settings)
    relay_of(settings)  # a bad ABUSEPIPE_MAIL_RELAY is one line here, not an error in every worker
    workers = args.workers if args.workers is not None else settings.portal_workers
    if workers < 1:
        raise ConfigError("--workers: at least 1")
    given = settings.portal_secret.get_secret_value() if settings.portal_secret is not None else ""
    if given and len(given) < 16:
        raise ConfigError("ABUSEPIPE_PORTAL_SECRET: at least 16 characters (or leave it unset)")
    url = store_url(args, settings)
    from sinks.store import ReportStore

    ReportStore.open(url).close()  # migrated once, before the workers start
    # The workers build the app from the environment (uvicorn starts them): the store and one secret
    # for all of them, so that a form served by one is accepted by another. Unset, the secret is random
    # at each start; a form opened before a restart then asks the sender to open the link again.
    os.environ["ABUSEPIPE_DATABASE_URL"] = url
    os.environ["ABUSEPIPE_PORTAL_SECRET"] = given or secrets.token_urlsafe(32)
    forwarded = args.forwarded_allow_ips or settings.portal_forwarded_allow_ips
    relay = f"mail through {settings.mail_relay}" if settings.mail_relay else "no mail relay"
    public = settings.portal_url
    say(
        f"portal on http://{host}:{port}/ (public URL {public}, workers: {workers}) "
        f"reading {display_url(url)}; {relay}"
    )
    sys.stderr.flush()
    uvicorn.run(
        "web.portal.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=bool(forwarded),
        forwarded_allow_ips=forwarded or None,
        server_header=False,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return EXIT_OK


def run_requests_list(args: argparse.Namespace, settings: Settings) -> int:
    from blocklist.delist import pending

    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            found = pending(connection, state=None if args.state == "all" else args.state, limit=args.limit)
    finally:
        store.close()
    print(render([request.document() for request in found], REQUEST_COLUMNS, args.format))
    return EXIT_OK


def run_requests_decide(args: argparse.Namespace, settings: Settings) -> int:
    from web.portal.review import decide_and_tell

    store = open_store(args, settings)
    now = datetime.now(UTC)
    try:
        with store.transaction() as connection:
            done = decide_and_tell(
                connection,
                settings.listing_policy(),
                args.id,
                approve=args.approve,
                reason=args.reason,
                actor=cli_actor(),
                now=now,
                mail_from=settings.mail_from,
                portal_url=settings.portal_url,
            )
        for change in done.changes:
            print(change.line())
        say(
            f"request {done.request.id} {done.request.state}; a mail to {done.request.email} is in the outbox"
        )
        sent, failed = sender_of(store, settings).flush()
        if failed:
            say("the relay did not take it yet; the portal keeps trying (abusepipe outbox list --unsent)")
        elif not sent and not settings.mail_relay:
            say("no ABUSEPIPE_MAIL_RELAY here: the portal sends it (abusepipe outbox flush)")
    finally:
        store.close()
    return EXIT_OK


def run_outbox_list(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.outbox import mails

    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            found = mails(connection, unsent_only=args.unsent, limit=args.limit)
    finally:
        store.close()
    print(render([mail.document() for mail in found], OUTBOX_COLUMNS, args.format))
    return EXIT_OK


def run_outbox_flush(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.outbox import retry_now

    if not settings.mail_relay:
        raise ConfigError("no relay: set ABUSEPIPE_MAIL_RELAY (host:port)")
    store = open_store(args, settings)
    try:
        with store.transaction() as connection:
            retry_now(connection, datetime.now(UTC))
        sent, failed = sender_of(store, settings).flush()
    finally:
        store.close()
    say(f"sent {sent} mails; {failed} failed (retried later)")
    return EXIT_OK if not failed else 1
