"""Delivering the outbox through the relay (`ABUSEPIPE_MAIL_RELAY`, optional STARTTLS and AUTH)."""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from abusepipe.errors import ConfigError
from sinks import outbox
from sinks.store import ReportStore

log = logging.getLogger("abusepipe.mail")
TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class MailRelay:
    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    ca_file: str | None = None
    """Trust this CA for the relay's certificate (an internal relay); default: the system's CAs."""
    timeout: float = TIMEOUT

    @classmethod
    def parse(
        cls,
        relay: str,
        *,
        sender: str,
        starttls: bool = False,
        username: str | None = None,
        password: SecretStr | None = None,
        ca_file: str | None = None,
    ) -> MailRelay:
        host, _, port = relay.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"ABUSEPIPE_MAIL_RELAY {relay!r}: give host:port, e.g. 127.0.0.1:25")
        if bool(username) != bool(password):
            raise ConfigError(
                "the relay's AUTH needs both ABUSEPIPE_MAIL_USERNAME and ABUSEPIPE_MAIL_PASSWORD"
            )
        if username and not starttls:
            raise ConfigError("the relay's AUTH needs ABUSEPIPE_MAIL_STARTTLS=true: no password in clear")
        return cls(host, int(port), sender, starttls, username, password, ca_file)

    def send(self, mail: outbox.QueuedMail) -> None:
        """One SMTP transaction; raises OSError or smtplib.SMTPException when the mail was not taken."""
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=self.ca_file))
                smtp.ehlo()
            if self.username and self.password is not None:
                smtp.login(self.username, self.password.get_secret_value())
            smtp.sendmail(self.sender, [mail.recipient], mail.message)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return f"{exc.smtp_code} {text}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{code} {text!r}" for code, text in exc.recipients.values())
    return f"{type(exc).__name__}: {exc}"


def _permanent(exc: BaseException) -> bool:
    """A 5xx answer: retrying the same mail cannot help."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 500


class OutboxSender:
    """Sends what is due; `run` does so in a background thread until stopped, woken early by `wake`."""

    def __init__(
        self,
        store: ReportStore,
        relay: MailRelay | None,
        *,
        interval: float = 15.0,
        first_retry: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.relay = relay
        self.interval = interval
        self.first_retry = timedelta(seconds=first_retry)
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self) -> tuple[int, int]:
        """One pass: (sent, failed)."""
        if self.relay is None:
            return 0, 0
        done = failures = 0
        while True:
            with self.store.engine.begin() as connection:
                batch = outbox.claim_due(connection, self.clock())
            if not batch:
                return done, failures
            for mail in batch:
                try:
                    self.relay.send(mail)
                except (OSError, smtplib.SMTPException) as exc:
                    permanent = _permanent(exc)
                    with self.store.engine.begin() as connection:
                        due = outbox.failed(
                            connection,
                            mail,
                            _reason(exc),
                            self.clock(),
                            first_retry=self.first_retry,
                            permanent=permanent,
                        )
                    if due is None:
                        log.error(
                            "mail %s (%s) refused by the relay for good, kept in the outbox: %s",
                            mail.id,
                            mail.purpose,
                            _reason(exc),
                        )
                    else:
                        log.warning(
                            "mail %s (%s) not sent, retry at %s: %s",
                            mail.id,
                            mail.purpose,
                            due.isoformat(),
                            _reason(exc),
                        )
                    failures += 1
                    continue
                with self.store.engine.begin() as connection:
                    outbox.sent(connection, mail.id, self.clock())
                done += 1
            if failures:
                return done, failures

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self.relay is None:
            log.warning("no ABUSEPIPE_MAIL_RELAY: mails wait in the outbox until one is set")
            return
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.flush()
            except Exception as exc:  # the store is down: the outbox is where it was; look again later
                log.warning("outbox: %s: %s", type(exc).__name__, exc)
            self._wake.wait(min(self.interval, self.first_retry.total_seconds()))
            self._wake.clear()

    @contextmanager
    def running(self) -> Iterator[OutboxSender]:
        """Delivering in the background while the block runs (an app's lifespan)."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=TIMEOUT + 5)
