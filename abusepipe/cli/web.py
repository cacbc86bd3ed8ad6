"""`abusepipe serve` (the analyst console and API), `abusepipe token ...`, `abusepipe audit`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from abusepipe.cli.common import (
    EXIT_NOT_FOUND,
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

ROLES = ("viewer", "analyst", "admin")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="the analyst console and API (HTTP; HTTPS with --tls-cert)")
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="default: ABUSEPIPE_CONSOLE_LISTEN or 127.0.0.1:8080"
    )
    serve.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate chain")
    serve.add_argument("--tls-key", type=Path, metavar="PEM", help="and this private key")
    serve.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="trust X-Forwarded-For/-Proto from these proxies (comma-separated; default: none)",
    )
    store_option(serve)
    serve.set_defaults(run=run_serve)

    token = commands.add_parser("token", help="API and console tokens (shown once, stored hashed)")
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="a new token, printed as the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--expires", metavar="DURATION", help="e.g. 90d, 12h, 2w (default: never)")
    store_option(create)
    create.set_defaults(run=run_token_create)
    listing = actions.add_parser("list", help="the tokens (never their secrets)")
    listing.add_argument("--format", choices=FORMATS, default="table")
    store_option(listing)
    listing.set_defaults(run=run_token_list)
    revoke = actions.add_parser("revoke", help="revoke a token by name or id (its browser sessions end)")
    revoke.add_argument("which", metavar="NAME|ID")
    store_option(revoke)
    revoke.set_defaults(run=run_token_revoke)

    audit = commands.add_parser("audit", help="who viewed raw evidence, exported, changed tokens")
    audit.add_argument("--limit", type=positive, default=100)
    audit.add_argument("--format", choices=FORMATS, default="table")
    store_option(audit)
    audit.set_defaults(run=run_audit)


def _actor() -> str:
    return cli_actor()


TOKEN_COLUMNS = ["id", "name", "role", "state", "created_at", "expires_at", "last_used_at"]


def run_token_create(args: argparse.Namespace, settings: Settings) -> int:
    from sinks import access

    lifetime = access.parse_lifetime(args.expires) if args.expires else None
    store = open_store(args, settings)
    now = datetime.now(UTC)
    try:
        with store.engine.begin() as connection:
            token = access.create_audited(
                connection, args.name, args.role, actor=_actor(), client="cli", now=now, expires=lifetime
            )
    finally:
        store.close()
    say(f"token {args.name!r} ({args.role}) created; it is shown once, here:")
    print(token)
    return EXIT_OK


def run_token_list(args: argparse.Namespace, settings: Settings) -> int:
    from sinks import access

    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            rows = [{**asdict(info), "state": info.state} for info in access.list_tokens(connection)]
    finally:
        store.close()
    print(render(rows, TOKEN_COLUMNS, args.format))
    return EXIT_OK


def run_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from sinks import access

    store = open_store(args, settings)
    now = datetime.now(UTC)
    try:
        with store.engine.begin() as connection:
            info = access.revoke_audited(connection, args.which, actor=_actor(), client="cli", now=now)
    finally:
        store.close()
    if info is None:
        say(f"no token {args.which}")
        return EXIT_NOT_FOUND
    say(f"token {info.name!r} revoked")
    return EXIT_OK


def run_audit(args: argparse.Namespace, settings: Settings) -> int:
    from sinks import access

    store = open_store(args, settings)
    try:
        with store.connect() as connection:
            entries = [asdict(entry) for entry in access.audit_entries(connection, limit=args.limit)]
    finally:
        store.close()
    print(render(entries, ["id", "at", "actor", "action", "target", "client"], args.format))
    return EXIT_OK


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from sinks.store import ReportStore
    from web.console.app import ConsoleConfig, create_app

    host, port = listen_address(args.listen or settings.console_listen, "--listen", default_host="127.0.0.1")
    free_to_listen(host, port)
    cert = args.tls_cert or settings.console_tls_cert
    key = args.tls_key or settings.console_tls_key
    if bool(cert) != bool(key):
        raise ConfigError("HTTPS needs both --tls-cert and --tls-key")
    for path in (cert, key):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{path}: no such file")
    url = store_url(args, settings)
    store = ReportStore.open(url)
    forwarded = args.forwarded_allow_ips or settings.console_forwarded_allow_ips
    from abusepipe.cli.portal import sender_of

    config = ConsoleConfig(
        store=store,
        tls=bool(cert),
        policy=settings.listing_policy(),
        portal_url=settings.portal_url,
        mail_from=settings.mail_from,
        sender=sender_of(store, settings),
    )
    app = create_app(config)
    scheme = "https" if cert else "http"
    say(f"console on {scheme}://{host}:{port}/ reading {display_url(url)}")
    sys.stderr.flush()
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            ssl_certfile=str(cert) if cert else None,
            ssl_keyfile=str(key) if key else None,
            proxy_headers=bool(forwarded),
            forwarded_allow_ips=forwarded or None,
            server_header=False,
            date_header=True,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        store.close()
    return EXIT_OK
