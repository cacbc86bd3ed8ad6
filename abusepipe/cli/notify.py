"""Who runs a source: `contact IP` (the abuse contact, where it came from, forward-confirmed rDNS)."""

from __future__ import annotations

import argparse
import json
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
