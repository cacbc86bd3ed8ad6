"""The long-running intakes: `abusepipe smtp` (SMTP/LMTP) and `abusepipe imap`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from abusepipe.cli.common import (
    EXIT_OK,
    EXIT_TEMPFAIL,
    count,
    listen_address,
    open_sink,
    positive,
    stop_on_signals,
    store_option,
    trust,
    trusted_network_option,
)
from abusepipe.errors import ConfigError
from ingest.defaults import default_workers

if TYPE_CHECKING:
    from collections.abc import Callable

    from abusepipe.settings import Settings
    from ingest.imap import ImapOptions, PassResult
    from ingest.live import IntakeCounters, MessageLog
    from ingest.oauth import TokenSource

IMAP_SCOPE = "https://outlook.office365.com/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    smtp = commands.add_parser(
        "smtp", help="receive reports over SMTP or LMTP for the configured abuse addresses (250 once durable)"
    )
    smtp.add_argument(
        "--listen", metavar="HOST:PORT", help="default: ABUSEPIPE_SMTP_LISTEN or 127.0.0.1:2525"
    )
    smtp.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="ADDRESS[=ROUTE]",
        help="an accepted address (repeatable); ROUTE: auto (default), trap, or a feedback type (fraud, ...)",
    )
    smtp.add_argument("--lmtp", action="store_true", help="speak LMTP (behind an MTA) instead of SMTP")
    smtp.add_argument("--max-size", type=positive, metavar="BYTES", help="largest message (default 32 MiB)")
    smtp.add_argument("--tls-cert", type=Path, metavar="PEM", help="certificate chain for STARTTLS")
    smtp.add_argument("--tls-key", type=Path, metavar="PEM", help="private key for STARTTLS")
    smtp.add_argument("--require-starttls", action="store_true", help="refuse mail before STARTTLS")
    _live_intake_options(smtp)
    smtp.set_defaults(run=run_smtp)

    imap = commands.add_parser(
        "imap", help="read report mailboxes over IMAP; mark each message only once it is durable"
    )
    imap.add_argument("--host", help="IMAP server (default: ABUSEPIPE_IMAP_HOST)")
    imap.add_argument("--port", type=positive, help="default: 993 for ssl, 143 otherwise")
    imap.add_argument("--security", choices=("ssl", "starttls", "plain"), help="default: ssl (IMAPS)")
    imap.add_argument("--user", help="login (default: ABUSEPIPE_IMAP_USERNAME)")
    imap.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="read the password here (else ABUSEPIPE_IMAP_PASSWORD)",
    )
    imap.add_argument(
        "--auth",
        choices=("password", "xoauth2", "oauthbearer"),
        help="how to log in (default: password; Microsoft 365 and Gmail need xoauth2 or oauthbearer)",
    )
    _oauth2_options(imap)
    imap.add_argument("--ca-file", type=Path, metavar="PEM", help="CA certificates to verify the server with")
    imap.add_argument(
        "--folder", action="append", default=[], help="folder to read (repeatable; default INBOX)"
    )
    imap.add_argument(
        "--mark", choices=("move", "flag"), help="move done messages away (default) or flag them"
    )
    imap.add_argument("--processed-folder", help="where done messages go (default Processed)")
    imap.add_argument("--rejected-folder", help="where messages without a report go (default Rejected)")
    imap.add_argument("--poll-interval", type=float, metavar="SECONDS", help="between passes (default 60)")
    imap.add_argument("--no-idle", action="store_true", help="poll even where the server offers IDLE")
    imap.add_argument("--once", action="store_true", help="one pass over the folders, then exit")
    imap.add_argument("--trap", action="store_true", help="each message is the junk itself (spam trap)")
    _live_intake_options(imap)
    imap.set_defaults(run=run_imap)

    graph = commands.add_parser(
        "graph", help="read an Exchange Online mailbox through Microsoft Graph (app-only); move once durable"
    )
    graph.add_argument("--mailbox", help="the abuse mailbox (default: ABUSEPIPE_GRAPH_MAILBOX)")
    graph.add_argument("--folder", help="folder to read (default inbox)")
    graph.add_argument("--processed-folder", help="where done messages go (default Processed)")
    graph.add_argument("--rejected-folder", help="where messages without a report go (default Rejected)")
    graph.add_argument("--poll-interval", type=float, metavar="SECONDS", help="between passes (default 60)")
    graph.add_argument("--once", action="store_true", help="one pass over the folder, then exit")
    graph.add_argument("--trap", action="store_true", help="each message is the junk itself (spam trap)")
    _oauth2_options(graph)
    _live_intake_options(graph)
    graph.set_defaults(run=run_graph)


def _oauth2_options(parser: argparse.ArgumentParser) -> None:
    """Where OAuth2 access tokens come from (imap, graph): a command, or Entra ID client credentials."""
    parser.add_argument(
        "--oauth2-token-command",
        metavar="CMD",
        help="a program that prints an access token (ABUSEPIPE_OAUTH2_TOKEN_COMMAND)",
    )
    parser.add_argument("--oauth2-tenant", metavar="ID", help="Entra ID tenant (ABUSEPIPE_OAUTH2_TENANT_ID)")
    parser.add_argument("--oauth2-client-id", metavar="ID", help="Entra ID app (ABUSEPIPE_OAUTH2_CLIENT_ID)")
    parser.add_argument(
        "--oauth2-client-secret-file",
        type=Path,
        metavar="FILE",
        help="the app's client secret (else ABUSEPIPE_OAUTH2_CLIENT_SECRET)",
    )
    parser.add_argument(
        "--oauth2-certificate",
        type=Path,
        metavar="PEM",
        help="the app's private key and certificate, instead of a client secret",
    )


def token_source(args: argparse.Namespace, settings: Settings, scope: str) -> TokenSource | None:
    """The OAuth2 token source the options and settings name, or None."""
    from pydantic import SecretStr

    from ingest.oauth import CommandTokens, EntraClientCredentials, EntraSettings

    command = args.oauth2_token_command or settings.oauth2_token_command
    tenant = args.oauth2_tenant or settings.oauth2_tenant_id
    client_id = args.oauth2_client_id or settings.oauth2_client_id
    if command and (tenant or client_id):
        raise ConfigError("OAuth2: a token command or Entra ID client credentials, not both")
    if command:
        return CommandTokens(command, timeout=settings.oauth2_token_timeout)
    if not (tenant or client_id):
        return None
    if not (tenant and client_id):
        raise ConfigError("Entra ID client credentials need --oauth2-tenant and --oauth2-client-id")
    secret = settings.oauth2_client_secret
    if args.oauth2_client_secret_file:
        try:
            secret = SecretStr(args.oauth2_client_secret_file.read_text().strip())
        except OSError as exc:
            raise ConfigError(f"--oauth2-client-secret-file: {exc.strerror or exc}") from exc
    certificate = args.oauth2_certificate or settings.oauth2_certificate
    return EntraClientCredentials(
        EntraSettings(
            tenant=tenant,
            client_id=client_id,
            scope=scope,
            client_secret=secret if certificate is None else None,
            certificate=certificate,
            authority_host=settings.oauth2_authority,
            ca_file=str(settings.oauth2_ca_file) if settings.oauth2_ca_file else None,
        ),
        timeout=settings.oauth2_token_timeout,
    )


def _live_intake_options(parser: argparse.ArgumentParser) -> None:
    """What the long-running intakes (smtp, imap) share."""
    trusted_network_option(parser)
    parser.add_argument(
        "--workers", type=count, default=None, metavar="N", help="parser processes (default: cores)"
    )
    parser.add_argument("--metrics-listen", metavar="HOST:PORT", help="serve Prometheus counters at /metrics")
    parser.add_argument("--stats-interval", type=float, default=60.0, metavar="SECONDS")
    store_option(parser)


def _serve_metrics(args: argparse.Namespace, intake: str, counters: IntakeCounters) -> None:
    if args.metrics_listen:
        from ingest.metrics import serve_metrics

        address = listen_address(args.metrics_listen, "--metrics-listen", default_host="127.0.0.1")
        serve_metrics(address, intake, counters)


def run_smtp(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from ingest.live import IntakeCounters, LiveIntake, MessageLog
    from ingest.runner import ParseOptions
    from ingest.smtp import IntakeHandler, SmtpOptions, make_routes, serve, tls_context

    base = ParseOptions(
        trust=trust(args, settings), limits=settings.parse_limits(), enrichment=settings.enrichment()
    )
    recipients = dict(settings.smtp_recipients)
    for spec in args.recipient:
        address, _, route = spec.partition("=")
        recipients[address] = route or "auto"
    routes = make_routes(recipients, base)
    host, port = listen_address(args.listen or settings.smtp_listen, "--listen")
    cert = args.tls_cert or settings.smtp_tls_cert
    key = args.tls_key or settings.smtp_tls_key
    if bool(cert) != bool(key):
        raise ConfigError("STARTTLS needs both --tls-cert and --tls-key")
    require_tls = args.require_starttls or settings.smtp_require_starttls
    if require_tls and not cert:
        raise ConfigError("--require-starttls needs --tls-cert and --tls-key")
    options = SmtpOptions(
        host=host,
        port=port,
        lmtp=args.lmtp,
        max_message_bytes=args.max_size or settings.max_message_bytes,
        hostname=settings.smtp_hostname,
        tls=tls_context(str(cert), str(key)) if cert and key else None,
        require_starttls=require_tls,
    )
    counters, log = IntakeCounters(), MessageLog("lmtp" if args.lmtp else "smtp")
    _serve_metrics(args, log.intake, counters)
    sink, destination = open_sink(args, settings)
    workers = args.workers if args.workers is not None else default_workers()
    intake = LiveIntake(sink, workers=workers)
    try:
        log.text(f"writing to {destination}")
        handler = IntakeHandler(intake, routes, counters, log, lmtp=args.lmtp)
        asyncio.run(serve(handler, options, stats_interval=args.stats_interval))
    finally:
        intake.close()
        sink.close()
    return EXIT_OK


def run_graph(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.graph import GraphIntake, GraphOptions
    from ingest.live import IntakeCounters, LiveIntake, MessageLog
    from ingest.runner import ParseOptions

    policy = trust(args, settings)
    mailbox = args.mailbox or settings.graph_mailbox
    if not mailbox:
        raise ConfigError("graph needs the mailbox: --mailbox or ABUSEPIPE_GRAPH_MAILBOX")
    tokens = token_source(args, settings, GRAPH_SCOPE)
    if tokens is None:
        raise ConfigError(
            "graph needs a token source: Entra ID client credentials (--oauth2-tenant, --oauth2-client-id "
            "and a secret or certificate) or --oauth2-token-command"
        )
    options = GraphOptions(
        mailbox=mailbox,
        base_url=settings.graph_url,
        folder=args.folder or settings.graph_folder,
        processed_folder=args.processed_folder or settings.graph_processed_folder,
        rejected_folder=args.rejected_folder or settings.graph_rejected_folder,
        poll_interval=args.poll_interval or settings.graph_poll_interval,
        max_message_bytes=settings.max_message_bytes,
        ca_file=str(settings.oauth2_ca_file) if settings.oauth2_ca_file else None,
    )
    parse_options = ParseOptions(
        trap=args.trap, trust=policy, limits=settings.parse_limits(), enrichment=settings.enrichment()
    )
    counters, log = IntakeCounters(), MessageLog("graph")
    _serve_metrics(args, "graph", counters)
    sink, destination = open_sink(args, settings)
    workers = args.workers if args.workers is not None else default_workers()
    intake = LiveIntake(sink, workers=0 if args.once else workers)
    reader = GraphIntake(options, intake, parse_options, counters, log, tokens=tokens)
    try:
        log.text(f"reading {options.folder} of {mailbox} through Microsoft Graph into {destination}")
        return _read_mailbox(args, log, counters, once=reader.run_once, run=reader.run)
    finally:
        reader.close()
        intake.close()
        sink.close()


def _imap_options(args: argparse.Namespace, settings: Settings) -> ImapOptions:
    from pydantic import SecretStr

    from ingest.imap import ImapOptions

    host = args.host or settings.imap_host
    user = args.user or settings.imap_username
    if not host or not user:
        raise ConfigError(
            "imap needs a server and a login: --host and --user (or ABUSEPIPE_IMAP_HOST/_USERNAME)"
        )
    auth = args.auth or settings.imap_auth
    password = settings.imap_password
    if args.password_file:
        try:
            password = SecretStr(args.password_file.read_text().strip())
        except OSError as exc:
            raise ConfigError(f"--password-file: {exc.strerror or exc}") from exc
    if password is None and auth == "password":
        raise ConfigError("imap needs a password: ABUSEPIPE_IMAP_PASSWORD or --password-file")
    ca_file = args.ca_file or settings.imap_ca_file
    return ImapOptions(
        host=host,
        username=user,
        password=password,
        auth=auth,
        port=args.port or settings.imap_port,
        security=args.security or settings.imap_security,
        ca_file=str(ca_file) if ca_file else None,
        folders=tuple(args.folder) or settings.imap_folders,
        mark=args.mark or settings.imap_mark,
        processed_folder=args.processed_folder or settings.imap_processed_folder,
        rejected_folder=args.rejected_folder or settings.imap_rejected_folder,
        poll_interval=args.poll_interval or settings.imap_poll_interval,
        idle=settings.imap_idle and not args.no_idle,
        max_message_bytes=settings.max_message_bytes,
    )


def run_imap(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.imap import ImapIntake
    from ingest.live import IntakeCounters, LiveIntake, MessageLog
    from ingest.runner import ParseOptions

    policy = trust(args, settings)
    options = _imap_options(args, settings)
    tokens = token_source(args, settings, IMAP_SCOPE)
    if options.auth != "password" and tokens is None:
        raise ConfigError(
            f"--auth {options.auth} needs a token source: --oauth2-token-command, or Entra ID client "
            "credentials (--oauth2-tenant, --oauth2-client-id and a secret or certificate)"
        )
    parse_options = ParseOptions(
        trap=args.trap, trust=policy, limits=settings.parse_limits(), enrichment=settings.enrichment()
    )
    counters, log = IntakeCounters(), MessageLog("imap")
    _serve_metrics(args, "imap", counters)
    sink, destination = open_sink(args, settings)
    workers = args.workers if args.workers is not None else default_workers()
    intake = LiveIntake(sink, workers=0 if args.once else workers)
    reader = ImapIntake(options, intake, parse_options, counters, log, tokens=tokens)
    try:
        log.text(
            f"reading {', '.join(options.folders)} at {options.host} as {options.username} into {destination}"
        )
        return _read_mailbox(args, log, counters, once=reader.once, run=reader.run)
    finally:
        intake.close()
        sink.close()


def _read_mailbox(
    args: argparse.Namespace,
    log: MessageLog,
    counters: IntakeCounters,
    *,
    once: Callable[[], PassResult],
    run: Callable[..., None],
) -> int:
    """`imap` and `graph` alike: one pass with --once (exit 75 when anything must be retried), else
    passes until a signal, with a counters line every --stats-interval seconds."""
    if args.once:
        result = once()
        log.text(f"done: {counters.line()}")
        return EXIT_TEMPFAIL if result.retried else EXIT_OK
    last = [time.monotonic()]

    def on_pass(_: PassResult) -> None:
        if time.monotonic() - last[0] >= args.stats_interval:
            log.text(f"so far: {counters.line()}")
            last[0] = time.monotonic()

    with stop_on_signals() as stop:
        run(stop, on_pass=on_pass)
    log.text(f"stopped: {counters.line()}")
    return EXIT_OK
