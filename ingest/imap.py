"""`abusepipe imap`: read report mailboxes over IMAP (IMAPS or STARTTLS), with IDLE where offered.

The mailbox itself holds the state: a message is unprocessed while it sits in a watched folder (move
mode) or lacks the done keyword (flag mode). It is marked — moved to the processed folder, or flagged —
only after the sink made it durable; messages with no report go to the rejected folder (or get the
dead-letter keyword too). A crash between the write and the mark leaves the message unmarked: the next
pass writes it again, which the store's unique report ids make harmless. Because no UID is remembered
between runs, a UIDVALIDITY change (a folder rebuilt by the server) needs nothing special.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any, Literal

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from pydantic import SecretStr

from abusepipe.errors import ConfigError, Unavailable
from ingest.live import IntakeCounters, LiveIntake, MessageLog, Outcome, message_id_of, settle
from ingest.oauth import TokenSource
from ingest.runner import ParseOptions
from ingest.sources import RawMessage

Security = Literal["ssl", "starttls", "plain"]
Mark = Literal["move", "flag"]
Auth = Literal["password", "xoauth2", "oauthbearer"]


class MailboxUnavailable(Unavailable):
    """The IMAP server cannot be reached or refused us: retry later."""


class MailboxRefused(MailboxUnavailable):
    """The server refused the login (password, or OAuth2 token)."""


def _where(options: ImapOptions) -> str:
    return f"{options.host}:{options.port_number()}"


def _secret(value: SecretStr | None) -> str:
    if value is None:
        raise ConfigError("IMAP password login needs a password")
    return value.get_secret_value()


@dataclass(frozen=True, slots=True)
class ImapOptions:
    host: str
    username: str
    password: SecretStr | None = None
    auth: Auth = "password"
    port: int | None = None
    security: Security = "ssl"
    ca_file: str | None = None
    folders: tuple[str, ...] = ("INBOX",)
    mark: Mark = "move"
    processed_folder: str = "Processed"
    rejected_folder: str = "Rejected"
    done_keyword: str = "$AbusepipeDone"
    rejected_keyword: str = "$AbusepipeDeadLetter"
    batch: int = 100
    batch_bytes: int = 64 * 1024 * 1024
    max_message_bytes: int = 32 * 1024 * 1024
    poll_interval: float = 60.0
    idle: bool = True
    timeout: float = 60.0

    def port_number(self) -> int:
        if self.port is not None:
            return self.port
        return 993 if self.security == "ssl" else 143


@dataclass(slots=True)
class PassResult:
    processed: int = 0
    retried: int = 0


class ImapIntake:
    def __init__(
        self,
        options: ImapOptions,
        intake: LiveIntake,
        parse_options: ParseOptions,
        counters: IntakeCounters,
        log: MessageLog,
        *,
        tokens: TokenSource | None = None,
    ) -> None:
        if options.auth != "password" and tokens is None:
            raise ConfigError(f"IMAP {options.auth.upper()} needs an OAuth2 token source")
        self.tokens = tokens
        self.options = options
        self.intake = intake
        self.parse_options = parse_options
        self.counters = counters
        self.log = log
        self._uidvalidity: dict[str, int] = {}

    # --- connection ---------------------------------------------------------------------------------

    def connect(self) -> IMAPClient:
        o = self.options
        if o.auth == "password":
            client = self._login(lambda c: c.login(o.username, _secret(o.password)))
        else:
            assert self.tokens is not None
            tokens = self.tokens
            try:
                client = self._login(lambda c: self._oauth_login(c, tokens.token()))
            except MailboxRefused:
                # A token the server refused may have been revoked or expired early: once more with a
                # fresh one, then the caller backs off.
                self.log.text(f"IMAP {o.auth.upper()} login refused: trying once more with a new token")
                client = self._login(lambda c: self._oauth_login(c, tokens.token(refresh=True)))
        if o.mark == "move":
            for folder in (o.processed_folder, o.rejected_folder):
                if not client.folder_exists(folder):
                    client.create_folder(folder)
        return client

    def _login(self, authenticate: Callable[[IMAPClient], object]) -> IMAPClient:
        o = self.options
        context = ssl.create_default_context(cafile=o.ca_file) if o.security != "plain" else None
        try:
            client = IMAPClient(
                o.host, o.port_number(), ssl=o.security == "ssl", ssl_context=context, timeout=o.timeout
            )
        except (OSError, ssl.SSLError) as exc:
            raise MailboxUnavailable(f"cannot reach IMAP at {_where(o)}: {_text(exc)}") from exc
        try:
            if o.security == "starttls":
                client.starttls(context)
            authenticate(client)
        except IMAPClientError as exc:
            _logout(client)
            raise MailboxRefused(f"IMAP login to {o.host} as {o.username} failed: {_text(exc)}") from exc
        except (OSError, ssl.SSLError) as exc:
            _logout(client)
            raise MailboxUnavailable(f"cannot reach IMAP at {_where(o)}: {_text(exc)}") from exc
        return client

    def _oauth_login(self, client: IMAPClient, token: SecretStr) -> None:
        o = self.options
        if o.auth == "oauthbearer":
            client.oauthbearer_login(o.username, token.get_secret_value())
        else:
            client.oauth2_login(o.username, token.get_secret_value())

    # --- one pass over the folders --------------------------------------------------------------------

    def run_once(self, client: IMAPClient) -> PassResult:
        result = PassResult()
        for folder in self.options.folders:
            self._process_folder(client, folder, result)
        return result

    def _process_folder(self, client: IMAPClient, folder: str, result: PassResult) -> None:
        o = self.options
        selected = client.select_folder(folder)
        validity = int(selected.get(b"UIDVALIDITY", 0))
        known = self._uidvalidity.get(folder)
        if known is not None and known != validity:
            self.log.text(f"{folder}: UIDVALIDITY changed ({known} -> {validity}); reading the folder afresh")
        self._uidvalidity[folder] = validity
        criteria: list[Any] = ["NOT", "DELETED"]
        if o.mark == "flag":
            criteria += ["NOT", "KEYWORD", o.done_keyword]
        uids = sorted(client.search(criteria))
        sizes = {
            uid: int(data.get(b"RFC822.SIZE", 0)) for uid, data in client.fetch(uids, ["RFC822.SIZE"]).items()
        }
        for chunk in self._batches(uids, sizes):
            fetched = self._fetch(client, chunk, sizes)
            pending: dict[int, tuple[Future[Outcome], str, str | None]] = {}
            for uid in chunk:
                raw = fetched.get(uid)
                if raw is None:
                    continue  # expunged meanwhile by another client
                source = f"imap:{o.username}@{o.host}/{folder};UIDVALIDITY={validity};UID={uid}"
                self.counters.add(received=1)
                size = sizes.get(uid, len(raw))
                truncated = size if size > o.max_message_bytes else None
                message = RawMessage(raw, source, truncated_from=truncated)
                pending[uid] = (
                    self.intake.submit(message, self.parse_options),
                    source,
                    message_id_of(raw),
                )
            wait([future for future, _, _ in pending.values()])
            done, rejected = [], []
            for uid, (future, source, message_id) in pending.items():
                outcome = settle(future, self.counters, self.log, source=source, message_id=message_id)
                if outcome is None:
                    result.retried += 1
                elif outcome.dead_letter is not None:
                    rejected.append(uid)
                else:
                    done.append(uid)
            self._mark(client, done, rejected)
            result.processed += len(done) + len(rejected)

    def _batches(self, uids: list[int], sizes: dict[int, int]) -> list[list[int]]:
        """Batches bounded by count and by bytes, so that memory stays bounded for huge messages."""
        o = self.options
        batches: list[list[int]] = []
        current: list[int] = []
        held = 0
        for uid in uids:
            size = min(sizes.get(uid, 0), o.max_message_bytes)
            if current and (len(current) >= o.batch or held + size > o.batch_bytes):
                batches.append(current)
                current, held = [], 0
            current.append(uid)
            held += size
        if current:
            batches.append(current)
        return batches

    def _fetch(self, client: IMAPClient, uids: list[int], sizes: dict[int, int]) -> dict[int, bytes]:
        """The messages' bytes; of one over the size limit only its head (it becomes a dead letter
        saying so, as the file intake does), never the whole of it into memory."""
        limit = self.options.max_message_bytes
        small = [uid for uid in uids if sizes.get(uid, 0) <= limit]
        large = [uid for uid in uids if sizes.get(uid, 0) > limit]
        out: dict[int, bytes] = {}
        if small:
            for uid, data in client.fetch(small, ["BODY.PEEK[]"]).items():
                if b"BODY[]" in data:
                    out[uid] = bytes(data[b"BODY[]"])
        if large:
            for uid, data in client.fetch(large, [f"BODY.PEEK[]<0.{limit}>"]).items():
                body = next((value for key, value in data.items() if key.startswith(b"BODY[]")), None)
                if body is not None:
                    out[uid] = bytes(body)
        return out

    def _mark(self, client: IMAPClient, done: list[int], rejected: list[int]) -> None:
        """Only now, with both lists durable, does the mailbox learn that they are done."""
        o = self.options
        if o.mark == "flag":
            if done:
                client.add_flags(done, [o.done_keyword])
            if rejected:
                client.add_flags(rejected, [o.done_keyword, o.rejected_keyword])
            return
        for uids, folder in ((done, o.processed_folder), (rejected, o.rejected_folder)):
            if not uids:
                continue
            if client.has_capability("MOVE"):
                client.move(uids, folder)
            else:
                client.copy(uids, folder)
                client.delete_messages(uids)
                if client.has_capability("UIDPLUS"):
                    client.uid_expunge(uids)
                else:
                    client.expunge()

    def once(self) -> PassResult:
        """Connect, make one pass over the folders, log out."""
        client = self.connect()
        try:
            return self.run_once(client)
        except (IMAPClientError, OSError, ssl.SSLError) as exc:
            raise MailboxUnavailable(f"IMAP at {self.options.host}: {_text(exc)}") from exc
        finally:
            _logout(client)

    # --- the long-running loop --------------------------------------------------------------------

    def run(self, stop: threading.Event, *, on_pass: Callable[[PassResult], None] | None = None) -> None:
        """Pass over the folders, then wait for new mail (IDLE on a single folder, else polling), until
        `stop`. Connection failures and unavailable sinks back off and retry; nothing is marked then."""
        backoff = 1.0
        while not stop.is_set():
            client: IMAPClient | None = None
            try:
                client = self.connect()
                if backoff > 1.0:
                    self.log.text(f"connected to {self.options.host} again")
                backoff = 1.0
                while not stop.is_set():
                    result = self.run_once(client)
                    if on_pass is not None:
                        on_pass(result)
                    if result.retried:
                        # The sink is down: the messages stay unmarked; try again after a pause.
                        stop.wait(min(30.0, backoff))
                        backoff = min(30.0, backoff * 2)
                        continue
                    backoff = 1.0
                    self._wait_for_mail(client, stop)
            except (MailboxUnavailable, IMAPClientError, OSError, ssl.SSLError) as exc:
                self.log.text(f"IMAP: {_text(exc)}; retrying in {backoff:.0f}s")
                stop.wait(backoff)
                backoff = min(60.0, backoff * 2)
            finally:
                if client is not None:
                    _logout(client)

    def _wait_for_mail(self, client: IMAPClient, stop: threading.Event) -> None:
        o = self.options
        if not (o.idle and len(o.folders) == 1 and client.has_capability("IDLE")):
            stop.wait(o.poll_interval)
            return
        # IDLE on the one selected folder; wake up at least every poll interval (and before the
        # 29-minute limit of RFC 2177), and every second to notice `stop`.
        client.idle()
        try:
            deadline = time.monotonic() + min(o.poll_interval, 29 * 60)
            while not stop.is_set() and time.monotonic() < deadline:
                if any(_is_news(response) for response in client.idle_check(timeout=1)):
                    break
        finally:
            client.idle_done()


def _is_news(response: Any) -> bool:
    return isinstance(response, tuple) and len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except (TimeoutError, IMAPClientError, OSError):
        # The connection is gone already: closing our end is all that is left to do.
        with contextlib.suppress(OSError):
            client.shutdown()


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def parse_folders(text: str) -> tuple[str, ...]:
    folders = tuple(f.strip() for f in text.split(",") if f.strip())
    if not folders:
        raise ConfigError("no IMAP folder to read")
    return folders
