"""What the command groups share: exit codes, common options, the store and sink they open, signals.

Cheap to import: everything heavy (SQLAlchemy, Kafka, parsers) is imported inside the function that
needs it, so that a command pays only for what it uses.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from abusepipe.errors import ConfigError

if TYPE_CHECKING:
    from abusepipe.settings import Settings
    from parsers.trust import TrustPolicy
    from sinks.base import BatchSink
    from sinks.store import ReportStore

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_UNREADABLE = 1
EXIT_REJECTED = 2
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_TEMPFAIL = 75  # sysexits EX_TEMPFAIL: an MTA keeps the message and retries
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what shells report for a command ended by Ctrl-C


def positive(text: str) -> int:
    return _whole(text, least=1)


def count(text: str) -> int:
    """A number of things that may be none (`--workers 0`: no parser processes)."""
    return _whole(text, least=0)


def _whole(text: str, *, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least {least}")
    return value


def store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        metavar="URL",
        help="SQLAlchemy URL of the store (default: ABUSEPIPE_DATABASE_URL or SQLite)",
    )


def trusted_network_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trusted-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="a network of your own relays, trusted in the Received walk (repeatable)",
    )


def trust(args: argparse.Namespace, settings: Settings) -> TrustPolicy:
    from parsers.trust import TrustPolicy

    try:
        return TrustPolicy.from_cidrs([*settings.trusted_networks, *args.trusted_network])
    except ValueError as exc:
        raise ConfigError(f"--trusted-network: {exc}") from exc


def store_url(args: argparse.Namespace, settings: Settings) -> str:
    url: str = args.database or settings.store_url()
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return url


def display_url(url: str) -> str:
    """The store's URL without its password, for log lines."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def open_store(args: argparse.Namespace, settings: Settings) -> ReportStore:
    from sinks.store import ReportStore

    return ReportStore.open(store_url(args, settings))


def with_listing_policy(store: ReportStore, settings: Settings) -> ReportStore:
    """A store that writes reports re-evaluates the listings after each batch (unless turned off)."""
    if settings.blocklist_enabled:
        from blocklist.evaluator import ListingEvaluator

        store.after_commit = ListingEvaluator(store.engine, settings.listing_policy())
    return store


def open_sink(args: argparse.Namespace, settings: Settings) -> tuple[BatchSink, str]:
    """Kafka when configured, else the store: the durable destination of every intake."""
    kafka = settings.kafka()
    if kafka is not None:
        from sinks.publisher import ReportPublisher

        return ReportPublisher(kafka), kafka.display()
    from sinks.store import ReportStore

    url = store_url(args, settings)
    return with_listing_policy(ReportStore.open(url), settings), display_url(url)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT, for the long-running commands to stop cleanly."""
    stop = threading.Event()

    def request_stop(signum: int, _: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def listen_address(text: str, option: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"{option} {text!r}: port out of range")
    return host.strip("[]") or default_host, number


def free_to_listen(host: str, port: int) -> None:
    """One line now, rather than the web server's own error after start-up, when the address is taken
    or not ours."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def cli_actor() -> str:
    """Who did it, for the audit log and listing history: the operating-system user."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def say(text: str) -> None:
    """One line for the user on stderr, prefixed like every abusepipe message."""
    print(f"abusepipe: {text}", file=sys.stderr, flush=True)
