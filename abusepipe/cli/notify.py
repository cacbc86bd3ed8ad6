"""Who runs a source and telling them: `contact IP` (the abuse contact, where it came from, forward-confirmed
rDNS) and `notify` (onward reports)."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import TYPE_CHECKING

from abusepipe.cli.common import EXIT_NOT_FOUND, EXIT_OK, open_store, say, store_option

if TYPE_CHECKING:
    from abusepipe.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    contact = commands.add_parser(
        "contact", help="the abuse contact of an IP and where it came from (overrides, Abusix, RDAP)"
    )
    contact.add_argument("ip")
    contact.add_argument("--refresh", action="store_true", help="ask again even if a cached answer holds")
    contact.add_argument("--format", choices=("table", "json"), default="table")
    store_option(contact)
    contact.set_defaults(run=run_contact)
    add_notify(commands)
    keys = commands.add_parser("feed", help="network owners' feed keys (granted through the portal)")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the keys granted (never the keys themselves)")
    listing.add_argument("--format", choices=("table", "json", "csv"), default="table")
    store_option(listing)
    listing.set_defaults(run=run_feed_list)
    revoke = actions.add_parser("revoke", help="a key reads nothing from now on")
    revoke.add_argument("id", type=int)
    store_option(revoke)
    revoke.set_defaults(run=run_feed_revoke)


def run_contact(args: argparse.Namespace, settings: Settings) -> int:
    from notify.contacts import ContactFinder

    finder = ContactFinder(settings.contact_sources())
    store = open_store(args, settings)
    try:
        with store.transaction() as connection:
            found = finder.find(connection, args.ip, refresh=args.refresh)
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps(found.document(), indent=2))
    else:
        confirmed = "forward-confirmed" if found.rdns_confirmed else "not forward-confirmed"
        print(f"{found.ip}: {found.contact or 'no abuse contact found'}")
        print(f"  from: {found.origin}{f' ({found.detail})' if found.detail else ''}")
        print(f"  reverse DNS: {found.rdns + ' (' + confirmed + ')' if found.rdns else 'none'}")
        when = found.fetched_at.isoformat(timespec="seconds")
        until = f", kept until {found.expires_at.isoformat(timespec='seconds')}" if found.expires_at else ""
        print(f"  looked up: {when}{' (cached)' if found.cached else ''}{until}")
    if found.error:
        say(f"warning: {found.error}")
    return EXIT_OK if found.contact else EXIT_NOT_FOUND


def add_notify(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    notify = commands.add_parser(
        "notify",
        help="report new junk to the networks that sent it (ARF, digests; Microsoft for Exchange Online)",
    )
    notify.add_argument(
        "--dry-run", action="store_true", help="show what would be sent; send and record nothing"
    )
    notify.add_argument("--once", action="store_true", help="one round, then exit (for cron)")
    notify.add_argument("--sent", action="store_true", help="what was sent to whom (the newest first)")
    notify.add_argument("--format", choices=("table", "json"), default="table")
    store_option(notify)
    notify.set_defaults(run=run_notify)


def run_notify(args: argparse.Namespace, settings: Settings) -> int:
    from abusepipe.cli.common import stop_on_signals
    from abusepipe.cli.portal import sender_of
    from abusepipe.output import render
    from notify.contacts import ContactFinder
    from notify.onward import NotifyPolicy, OnwardReporter, history

    store = open_store(args, settings)
    try:
        if args.sent:
            with store.connect() as connection:
                rows = history(connection)
            print(render(rows, ["id", "at", "contact", "kind", "reports", "mails"], args.format))
            return EXIT_OK
        policy = NotifyPolicy(
            sender=settings.mail_from,
            operator=settings.mail_from.rpartition("@")[2] or "our users",
            window=timedelta(days=settings.notify_window_days),
            interval=timedelta(hours=settings.notify_interval_hours),
            max_arf=settings.notify_max_arf,
            opt_out=frozenset(entry.strip().lower() for entry in settings.notify_opt_out if entry.strip()),
            microsoft_junk=settings.notify_microsoft_junk,
            microsoft_phish=settings.notify_microsoft_phish,
        )
        reporter = OnwardReporter(policy, ContactFinder(settings.contact_sources()))
        sender = sender_of(store, settings)

        def one_round() -> None:
            with store.transaction(rollback=args.dry_run) as connection:
                plans, waiting = reporter.plan(connection)
                mails = 0 if args.dry_run else reporter.send(connection, plans)
            for planned in plans:
                print(("would send " if args.dry_run else "") + planned.line())
            for line in waiting:
                say(f"waiting: {line}")
            if not args.dry_run:
                sent, failed = sender.flush()
                say(f"{mails} mails queued; {sent} sent, {failed} not yet (the outbox keeps them)")

        one_round()
        if args.once or args.dry_run:
            return EXIT_OK
        with stop_on_signals() as stop:
            while not stop.wait(settings.notify_every):
                one_round()
    finally:
        store.close()
    return EXIT_OK


def run_feed_list(args: argparse.Namespace, settings: Settings) -> int:
    from abusepipe.output import render
    from notify.feed import keys

    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            found = keys(connection)
    finally:
        store.close()
    print(render(found, ["id", "network", "contact", "confirmed_at", "revoked_at"], args.format))
    return EXIT_OK


def run_feed_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from notify.feed import revoke

    store = open_store(args, settings)
    try:
        with store.transaction() as connection:
            done = revoke(connection, args.id, datetime.now(UTC))
    finally:
        store.close()
    if not done:
        say(f"error: no feed key {args.id} in force")
        return EXIT_NOT_FOUND
    say(f"feed key {args.id} revoked")
    return EXIT_OK
