"""`abusepipe graph`: read an Exchange Online abuse mailbox through Microsoft Graph (app-only).

The app holds `Mail.ReadWrite` (limited to the abuse mailbox by an application access policy). A pass
lists the folder page by page (`@odata.nextLink`), fetches each message's MIME (`/$value`), hands it to
the live-intake core, and only once the message is durable moves it to the processed folder (the
rejected one for dead letters). A moved message gets a new id, so nothing is remembered between passes:
the mailbox holds the state, as with IMAP. A crash between the write and the move leaves the message in
place; the next pass writes it again, which unique report ids make harmless, then moves it.

Graph's throttling (429, 503, 504 with `Retry-After`) is honoured; a refused token is fetched again once.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from abusepipe.errors import Unavailable
from ingest.imap import PassResult
from ingest.live import IntakeCounters, LiveIntake, MessageLog, Outcome, message_id_of, settle
from ingest.oauth import TokenSource
from ingest.runner import ParseOptions
from ingest.sources import RawMessage

THROTTLED = (429, 503, 504)
MAX_RETRY_AFTER = 120.0
MAX_ATTEMPTS = 6


class GraphUnavailable(Unavailable):
    """Microsoft Graph cannot be reached, refused us, or kept throttling: retry later."""


@dataclass(frozen=True, slots=True)
class GraphOptions:
    mailbox: str
    base_url: str = "https://graph.microsoft.com/v1.0"
    folder: str = "inbox"
    processed_folder: str = "Processed"
    rejected_folder: str = "Rejected"
    page_size: int = 50
    max_per_pass: int = 2000
    max_message_bytes: int = 32 * 1024 * 1024
    poll_interval: float = 60.0
    timeout: float = 60.0
    ca_file: str | None = None


class GraphIntake:
    def __init__(
        self,
        options: GraphOptions,
        intake: LiveIntake,
        parse_options: ParseOptions,
        counters: IntakeCounters,
        log: MessageLog,
        *,
        tokens: TokenSource,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options
        self.intake = intake
        self.parse_options = parse_options
        self.counters = counters
        self.log = log
        self.tokens = tokens
        self._sleep = sleep
        self._folders: dict[str, str] = {}
        self._http = httpx.Client(
            timeout=options.timeout, verify=options.ca_file or True, follow_redirects=False
        )

    def close(self) -> None:
        self._http.close()

    # --- HTTP ---------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        if path.startswith(("https://", "http://")):
            return path  # an @odata.nextLink
        return f"{self.options.base_url.rstrip('/')}/users/{quote(self.options.mailbox)}{path}"

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self._url(path)
        refreshed = False
        for attempt in range(MAX_ATTEMPTS):
            token = self.tokens.token()
            headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
            try:
                response = self._http.request(method, url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                raise GraphUnavailable(f"cannot reach Microsoft Graph: {_text(exc)}") from exc
            if response.status_code == 401 and not refreshed:
                refreshed = True  # once more with a fresh token
                self.tokens.token(refresh=True)
                continue
            if response.status_code in THROTTLED:
                self._throttled(response, attempt)
                continue
            if response.status_code >= 400:
                raise GraphUnavailable(f"Microsoft Graph {method} {_path(url)}: {_status(response)}")
            return response
        raise GraphUnavailable(f"Microsoft Graph kept refusing {method} {_path(url)} (throttled)")

    # --- folders ------------------------------------------------------------------------------------

    def folder_id(self, name: str, *, create: bool) -> str:
        """A folder's id: well-known names (inbox, junkemail, ...) are ids already."""
        if name.lower() in WELL_KNOWN:
            return name.lower()
        if name in self._folders:
            return self._folders[name]
        escaped = name.replace("'", "''")
        found = self._request("GET", "/mailFolders", params={"$filter": f"displayName eq '{escaped}'"})
        values = found.json().get("value", [])
        if values:
            folder = str(values[0]["id"])
        elif create:
            made = self._request("POST", "/mailFolders", json={"displayName": name})
            folder = str(made.json()["id"])
        else:
            raise GraphUnavailable(f"no folder {name!r} in {self.options.mailbox}")
        self._folders[name] = folder
        return folder

    # --- one pass -----------------------------------------------------------------------------------

    def list_ids(self) -> list[str]:
        o = self.options
        folder = self.folder_id(o.folder, create=False)
        url: str | None = f"/mailFolders/{quote(folder)}/messages"
        params: dict[str, str] | None = {"$select": "id", "$top": str(o.page_size)}
        ids: list[str] = []
        while url and len(ids) < o.max_per_pass:
            page = self._request("GET", url, params=params).json()
            ids.extend(str(item["id"]) for item in page.get("value", []) if "id" in item)
            url, params = page.get("@odata.nextLink"), None
        return ids[: o.max_per_pass]

    def run_once(self) -> PassResult:
        o = self.options
        result = PassResult()
        ids = self.list_ids()
        if not ids:
            return result
        processed = self.folder_id(o.processed_folder, create=True)
        rejected = self.folder_id(o.rejected_folder, create=True)
        for start in range(0, len(ids), 50):
            pending: dict[str, tuple[Future[Outcome], str, str | None]] = {}
            for message_id in ids[start : start + 50]:
                raw, size = self._fetch(message_id)
                source = f"graph:{o.mailbox}/{o.folder};id={message_id}"
                self.counters.add(received=1)
                truncated = size if size > o.max_message_bytes else None
                message = RawMessage(raw, source, truncated_from=truncated)
                future = self.intake.submit(message, self.parse_options)
                pending[message_id] = (future, source, message_id_of(raw))
            wait([future for future, _, _ in pending.values()])
            for message_id, (future, source, internet_id) in pending.items():
                outcome = settle(future, self.counters, self.log, source=source, message_id=internet_id)
                if outcome is None:
                    result.retried += 1
                    continue
                self._move(message_id, rejected if outcome.dead_letter is not None else processed)
                result.processed += 1
        return result

    def _fetch(self, message_id: str) -> tuple[bytes, int]:
        """The message's MIME; of one over the size limit only its head, and its size as far as read."""
        limit = self.options.max_message_bytes
        url = self._url(f"/messages/{quote(message_id)}/$value")
        refresh = False
        for attempt in range(MAX_ATTEMPTS):
            token = self.tokens.token(refresh=refresh)
            headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
            try:
                with self._http.stream("GET", url, headers=headers) as response:
                    if response.status_code == 401 and not refresh:
                        refresh = True  # once more with a fresh token
                        continue
                    refresh = False
                    if response.status_code in THROTTLED:
                        self._throttled(response, attempt)
                        continue
                    if response.status_code >= 400:
                        response.read()
                        raise GraphUnavailable(f"Microsoft Graph GET {_path(url)}: {_status(response)}")
                    return _read_bounded(response, limit)
            except httpx.HTTPError as exc:
                raise GraphUnavailable(f"cannot reach Microsoft Graph: {_text(exc)}") from exc
        raise GraphUnavailable(f"Microsoft Graph kept refusing GET {_path(url)}")

    def _throttled(self, response: httpx.Response, attempt: int) -> None:
        wait_for = _retry_after(response.headers.get("Retry-After"), attempt)
        self.log.text(f"Microsoft Graph answered {response.status_code}: waiting {wait_for:.0f}s")
        self._sleep(wait_for)

    def _move(self, message_id: str, folder: str) -> None:
        """Only now, with the message durable, does the mailbox learn that it is done."""
        self._request("POST", f"/messages/{quote(message_id)}/move", json={"destinationId": folder})

    # --- the long-running loop --------------------------------------------------------------------

    def run(self, stop: threading.Event, *, on_pass: Callable[[PassResult], None] | None = None) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                result = self.run_once()
            except Unavailable as exc:
                self.log.text(f"Graph: {exc}; retrying in {backoff:.0f}s")
                stop.wait(backoff)
                backoff = min(60.0, backoff * 2)
                continue
            if on_pass is not None:
                on_pass(result)
            if result.retried:
                stop.wait(min(30.0, backoff))
                backoff = min(30.0, backoff * 2)
                continue
            backoff = 1.0
            stop.wait(self.options.poll_interval)


WELL_KNOWN = frozenset(
    {"inbox", "junkemail", "deleteditems", "drafts", "sentitems", "archive", "outbox", "clutter"}
)


def _retry_after(value: str | None, attempt: int) -> float:
    """Graph's Retry-After (seconds, or an HTTP date); without one, a growing pause."""
    fallback = min(MAX_RETRY_AFTER, 2.0 ** (attempt + 1))
    if not value:
        return fallback
    value = value.strip()
    if value.isdigit():
        return min(MAX_RETRY_AFTER, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return fallback
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, min(MAX_RETRY_AFTER, (when - datetime.now(UTC)).total_seconds()))


def _read_bounded(response: httpx.Response, limit: int) -> tuple[bytes, int]:
    chunks: list[bytes] = []
    held = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        held += len(chunk)
        if held > limit:
            break  # over the limit: its head is kept (as a dead letter saying so), never all of it
    return b"".join(chunks)[:limit], held


def _status(response: httpx.Response) -> str:
    """The status and Graph's error code and message (JSON `error`), on one line."""
    try:
        error = response.json().get("error", {})
        detail = f"{error.get('code', '')}: {error.get('message', '')}"
    except (ValueError, AttributeError):
        detail = response.reason_phrase
    return " ".join(f"{response.status_code} {detail}".split())[:200]


def _path(url: str) -> str:
    return httpx.URL(url).path[:200]


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
