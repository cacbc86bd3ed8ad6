"""The blocked-senders list: `blocklist list|show|add|remove|evaluate|export` and the Postfix policy server
`policy`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abusepipe.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    cli_actor,
    display_url,
    listen_address,
    open_store,
    positive,
    say,
    stop_on_signals,
    store_option,
    store_url,
)
from abusepipe.errors import ConfigError
from abusepipe.output import render

if TYPE_CHECKING:
    from abusepipe.settings import Settings
    from blocklist.listings import Change

KINDS = ("ip", "network", "tenant", "from_domain", "mail_from_domain", "dkim_domain", "url_domain")
EXPORT_FORMATS = ("rbldnsd", "postfix", "plain", "json", "tenants")
LIST_COLUMNS = ["kind", "key", "state", "origin", "listed_at", "expires_at", "reason"]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    blocklist = commands.add_parser("blocklist", help="the blocked-senders list: listings, history, exports")
    actions = blocklist.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="listings (newest change first)")
    listing.add_argument("--state", choices=("listed", "delisted", "expired"), help="default: every state")
    listing.add_argument("--kind", action="append", choices=KINDS, default=[], help="repeatable")
    listing.add_argument("--limit", type=positive)
    listing.add_argument("--format", choices=("table", "json", "csv"), default="table")
    store_option(listing)
    listing.set_defaults(run=run_list)

    show = actions.add_parser("show", help="one listing: its state, the evidence, its history")
    show.add_argument("kind", choices=KINDS)
    show.add_argument("key")
    show.add_argument("--format", choices=("table", "json"), default="table")
    store_option(show)
    show.set_defaults(run=run_show)

    add = actions.add_parser("add", help="list by hand (kept until removed, or for --ttl)")
    add.add_argument("kind", choices=KINDS)
    add.add_argument("key")
    add.add_argument("--reason", required=True)
    add.add_argument("--ttl", help="e.g. 12h, 7d, 2w (default: until removed)")
    add.add_argument("--force", action="store_true", help="list it even if the policy never would")
    store_option(add)
    add.set_defaults(run=run_add)

    remove = actions.add_parser("remove", help="delist by hand")
    remove.add_argument("kind", choices=KINDS)
    remove.add_argument("key")
    remove.add_argument("--reason", required=True)
    store_option(remove)
    remove.set_defaults(run=run_remove)

    evaluate = actions.add_parser("evaluate", help="re-evaluate every offender now (after a policy change)")
    evaluate.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    evaluate.add_argument("--format", choices=("table", "json"), default="table")
    store_option(evaluate)
    evaluate.set_defaults(run=run_evaluate)

    from abusepipe.cli.portal import add_request_commands

    add_request_commands(actions)
    export = actions.add_parser("export", help="the listings in force, for rbldnsd, Postfix and others")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument("--output", type=Path, metavar="FILE", help="default: standard output")
    export.add_argument("--kind", action="append", choices=KINDS, default=[], help="only these kinds")
    export.add_argument(
        "--watch", action="store_true", help="keep FILE up to date (rewritten only when it changes)"
    )
    export.add_argument("--interval", type=float, default=10.0, help="seconds between looks (--watch)")
    store_option(export)
    export.set_defaults(run=run_export)

    policy = commands.add_parser("policy", help="Postfix policy server enforcing the blocked-senders list")
    policy.add_argument(
        "--listen", metavar="HOST:PORT", help="default: ABUSEPIPE_POLICY_LISTEN or 127.0.0.1:10040"
    )
    policy.add_argument(
        "--refresh",
        type=float,
        help="seconds between looks at the store (default: ABUSEPIPE_POLICY_REFRESH, 5)",
    )
    policy.add_argument(
        "--fail-closed",
        action="store_true",
        help="answer 451 4.7.1 while no listings could be loaded (default: DUNNO, fail open)",
    )
    store_option(policy)
    policy.set_defaults(run=run_policy)


def _now() -> datetime:
    return datetime.now(UTC)


def _print_changes(changes: list[Change], fmt: str, *, dry_run: bool = False) -> None:
    if fmt == "json":
        print(json.dumps([c.document() for c in changes], indent=2, ensure_ascii=False))
        return
    for change in changes:
        print(("would be " if dry_run else "") + change.line())


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from blocklist.listings import listings

    now = _now()
    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            found = listings(connection, now, state=args.state, kinds=args.kind, limit=args.limit)
    finally:
        store.close()
    documents = [listing.document(now) for listing in found]
    if args.format == "json":
        print(json.dumps(documents, indent=2, ensure_ascii=False))
    else:
        print(render(documents, LIST_COLUMNS, args.format))
    return EXIT_OK


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    from blocklist.keys import normalize
    from blocklist.show import describe

    key = normalize(args.kind, args.key)
    policy = settings.listing_policy()
    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            document = describe(connection, policy, args.kind, key, _now())
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        _print_description(document)
    if document["listing"] is None and not document["covered_by"] and not document["history"]:
        return EXIT_NOT_FOUND
    return EXIT_OK


def _print_description(document: dict[str, Any]) -> None:
    listing = document["listing"]
    print(f"{document['kind']} {document['key']}: {document['state']}")
    if listing is not None:
        for name in (
            "origin",
            "reason",
            "reason_code",
            "listed_at",
            "expires_at",
            "last_evidence_at",
            "ended_at",
        ):
            if listing.get(name):
                print(f"  {name.replace('_', ' ')}: {listing[name]}")
    for cover in document["covered_by"]:
        print(f"  covered by {cover['kind']} {cover['key']} (until {cover['expires_at'] or 'removed'})")
    if document["never"]:
        print(f"  never listed by the policy: {document['never']}")
    evidence = document["evidence"]
    print(
        f"  evidence within {evidence['window']}: {evidence['reporters']} distinct reporters, "
        f"{evidence['traps']} spam traps "
        f"(listed at {evidence['reporters_needed']} or {evidence['traps_needed']})"
    )
    if document["history"]:
        print("  history:")
        for event in document["history"]:
            print(f"    {event['at']}  {event['event']:<20} {event['actor']}: {event['reason']}")


def run_add(args: argparse.Namespace, settings: Settings) -> int:
    from blocklist.keys import parse_ttl
    from blocklist.listings import add

    ttl = parse_ttl(args.ttl) if args.ttl else None
    policy = settings.listing_policy()
    store = open_store(args, settings)
    try:
        with store.transaction() as connection:
            changes = add(
                connection,
                policy,
                args.kind,
                args.key,
                reason=args.reason,
                actor=cli_actor(),
                now=_now(),
                ttl=ttl,
                force=args.force,
            )
    finally:
        store.close()
    _print_changes(changes, "table")
    return EXIT_OK


def run_remove(args: argparse.Namespace, settings: Settings) -> int:
    from blocklist.listings import NotListed, covering, remove

    policy = settings.listing_policy()
    store = open_store(args, settings)
    now = _now()
    try:
        with store.transaction() as connection:
            try:
                changes = remove(
                    connection, policy, args.kind, args.key, reason=args.reason, actor=cli_actor(), now=now
                )
            except NotListed as exc:
                say(f"error: {exc}")
                return EXIT_NOT_FOUND
            still = covering(connection, changes[0].key, now) if args.kind == "ip" else []
    finally:
        store.close()
    _print_changes(changes, "table")
    for listing in still:
        say(f"note: {changes[0].key} is still covered by the listed {listing.kind} {listing.key}")
    return EXIT_OK


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from blocklist.listings import evaluate_all

    policy = settings.listing_policy()
    store = open_store(args, settings)
    try:
        with store.transaction(rollback=args.dry_run) as connection:
            changes = evaluate_all(connection, policy, _now(), actor=cli_actor())
    finally:
        store.close()
    _print_changes(changes, args.format, dry_run=args.dry_run)
    if args.format != "json":
        verb = "would change" if args.dry_run else "changed"
        noun = "listing" if len(changes) == 1 else "listings"
        say(f"evaluated the listing policy: {len(changes)} {noun} {verb}")
    return EXIT_OK


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    from blocklist.export import entries, json_export, render, write_if_changed

    if args.watch and args.output is None:
        raise ConfigError("--watch needs --output FILE")
    if args.interval <= 0:
        raise ConfigError("--interval: must be positive")
    store = open_store(args, settings)

    def export_once() -> tuple[bool, int]:
        with store.connect() as connection:
            if args.format == "json":
                text, count = json_export(connection, _now(), kinds=args.kind)
            else:
                listed = entries(connection, _now(), kinds=args.kind, full=False)
                text, count = render(args.format, listed, settings.portal_url), len(listed)
        if args.output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return True, count
        return write_if_changed(args.output, text.encode("utf-8")), count

    try:
        written, count = export_once()
        if args.output is not None:
            say(f"{args.output}: {count} listings{'' if written else ' (unchanged)'}")
        if not args.watch:
            return EXIT_OK
        from sinks.store import StoreUnavailable

        with stop_on_signals() as stop:
            while not stop.wait(args.interval):
                try:
                    written, count = export_once()
                except StoreUnavailable as exc:
                    say(f"{exc}; keeping {args.output} as it is")
                    continue
                if written:
                    say(f"{args.output}: {count} listings at {time.strftime('%H:%M:%S')}")
    finally:
        store.close()
    return EXIT_OK


def run_policy(args: argparse.Namespace, settings: Settings) -> int:
    from blocklist.policyd import PolicyServer, SnapshotSource, run_forever
    from sinks.store import make_engine

    host, port = listen_address(args.listen or settings.policy_listen, "--listen", default_host="127.0.0.1")
    refresh = args.refresh if args.refresh is not None else settings.policy_refresh
    if not 0 < refresh <= 10:
        raise ConfigError("--refresh: between 0 and 10 seconds")
    url = store_url(args, settings)
    engine = make_engine(url)  # not ReportStore.open: the server must start with the store down
    server = PolicyServer(
        SnapshotSource(engine).load,
        portal_url=settings.portal_url,
        refresh=refresh,
        fail_closed=args.fail_closed,
    )

    def ready(_: object) -> None:
        loaded = (
            f"{len(server.snapshot)} listings" if server.snapshot is not None else "no listings loaded yet"
        )
        say(f"policy server on {host}:{port} ({loaded} from {display_url(url)})")

    try:
        with stop_on_signals() as stop:
            try:
                run_forever(server, host, port, stop_flag=stop, ready=ready)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    finally:
        engine.dispose()
    say(
        f"policy server stopped: {server.requests} requests, {server.rejected} rejected, "
        f"{server.malformed} malformed"
    )
    return EXIT_OK
