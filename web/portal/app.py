"""The public delist portal (`abusepipe portal`): its own ASGI app and process, never the console's.

It reads and writes only what a sender may see and do: an IP's public status (counts and dates, never a
reporter, a trap or a message), its own delisting requests, and the outbox. Every page is
server-rendered with no script, under the same strict headers as the console; every page has a JSON
twin (`/api/v1/...`).
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import logging
import multiprocessing
import secrets
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.types import ASGIApp

from abusepipe import __version__
from abusepipe.lifetime import end_with_parent
from abusepipe.settings import Settings
from blocklist.delist import RequestLimits
from blocklist.policy import ListingPolicy
from sinks.mailer import MailRelay, OutboxSender
from sinks.store import ReportStore
from web.connections import RequestConnections
from web.errors import handle_errors
from web.headers import SecurityHeaders
from web.portal import feed, pages
from web.portal.i18n import LANGUAGES, choose, translations

HERE = Path(__file__).resolve().parent
THREADS = 4
log = logging.getLogger("abusepipe.portal")


@dataclass(frozen=True, slots=True)
class PortalConfig:
    store: ReportStore
    portal_url: str
    mail_from: str
    policy: ListingPolicy = field(default_factory=ListingPolicy)
    limits: RequestLimits = field(default_factory=RequestLimits)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    """Signs the CSRF tokens of the confirmation pages."""
    sender: OutboxSender | None = None
    policy_refresh: float = 5.0
    """The policy server's refresh, for the page that says when a delisting takes effect."""
    rdap_url: str = "https://rdap.org/"
    """Where the owners' feed finds a range's abuse contact."""


class Portal:
    """What the routes share: the configuration and one Jinja2 environment per language."""

    def __init__(self, config: PortalConfig) -> None:
        self.config = config
        self.environments = {lang: self._environment(lang) for lang in LANGUAGES}

    def _environment(self, lang: str) -> Environment:
        environment = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(default=True, default_for_string=True),  # every page shows input
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # no stat() of every template on every page
        )
        environment.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
        environment.globals.update(version=__version__, languages=LANGUAGES, lang=lang)
        return environment

    def lang(self, request: Request) -> str:
        return choose(
            request.query_params.get("lang"),
            request.cookies.get("lang"),
            request.headers.get("accept-language"),
        )

    def render(
        self, request: Request, name: str, context: dict[str, Any], *, status: int = 200
    ) -> HTMLResponse:
        lang = self.lang(request)
        template = self.environments[lang].get_template(name)
        html = template.render(switch=self._switch(request), **context)
        response = HTMLResponse(html, status_code=status, headers={"Content-Language": lang})
        chosen = request.query_params.get("lang")
        if chosen in LANGUAGES and chosen != request.cookies.get("lang"):
            response.set_cookie("lang", chosen, max_age=365 * 86400, samesite="lax", httponly=True)
        return response

    @staticmethod
    def _switch(request: Request) -> dict[str, str]:
        """The language switch's links: this page again (a GET) or the start (after a POST)."""
        if request.method != "GET":
            return {lang: f"/?{urlencode({'lang': lang})}" for lang in LANGUAGES}
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
        return {lang: f"{request.url.path}?{urlencode([*params, ('lang', lang)])}" for lang in LANGUAGES}

    def csrf(self, token_hash: str) -> str:
        return hmac.new(self.config.secret, f"delist:{token_hash}".encode(), hashlib.sha256).hexdigest()

    def link(self, token: str) -> str:
        return f"{self.config.portal_url.rstrip('/')}/delist/{token}"


def limits_of(settings: Settings) -> RequestLimits:
    return RequestLimits(
        link_lifetime=timedelta(minutes=settings.portal_link_minutes),
        self_delistings=settings.portal_self_delistings,
        per_email_per_day=settings.portal_email_requests,
        per_ip_per_day=settings.portal_ip_requests,
        per_client_per_hour=settings.portal_client_requests,
    )


def relay_of(settings: Settings) -> MailRelay | None:
    if not settings.mail_relay:
        return None
    return MailRelay.parse(
        settings.mail_relay,
        sender=settings.mail_from,
        starttls=settings.mail_starttls,
        username=settings.mail_username,
        password=settings.mail_password,
        ca_file=settings.mail_ca_file,
    )


def app_from_environment() -> ASGIApp:
    """The app of one `abusepipe portal` worker: everything from the settings (the command put the store
    and the secret in the environment)."""
    supervisor = multiprocessing.parent_process()
    if supervisor is not None and supervisor.pid is not None:
        # One of `--workers N` (uvicorn's supervisor started it): it serves on the supervisor's socket, so
        # it must not outlive a SIGKILLed supervisor. SIGTERM lets it finish the requests it is serving.
        end_with_parent(supervisor.pid, signal_number=signal.SIGTERM)
    settings = Settings()
    store = ReportStore.open(settings.store_url())
    secret = settings.portal_secret.get_secret_value().encode() if settings.portal_secret else b""
    config = PortalConfig(
        store=store,
        portal_url=settings.portal_url,
        mail_from=settings.mail_from,
        policy=settings.listing_policy(),
        limits=limits_of(settings),
        secret=secret or secrets.token_bytes(32),
        sender=OutboxSender(store, relay_of(settings), first_retry=settings.mail_retry_seconds),
        policy_refresh=settings.policy_refresh,
        rdap_url=settings.rdap_url,
    )
    return create_app(config)


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def create_app(config: PortalConfig) -> ASGIApp:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # A page is a few short queries: more threads than this only fight over the GIL (measured with
        # benchmarks/portal.py: 4 threads served 485 pages/s with p99 65 ms where 8 served 374 with
        # p99 141 ms, and anyio's default 40 fewer still).
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        gc.freeze()  # what start-up made lives as long as the process: no collection walks it again
        try:
            with config.sender.running() if config.sender is not None else nullcontext():
                yield
        finally:
            config.store.close()

    app = FastAPI(
        title="abusepipe delist portal",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    portal = Portal(config)
    app.state.portal = portal
    app.state.store = config.store  # web.connections reads it
    app.include_router(pages.router)
    app.include_router(feed.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def answer(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return portal.render(
            request, "error.html", {"status": status, "code": "", "message": message}, status=status
        )

    handle_errors(
        app,
        answer,
        log=log,
        unavailable="temporarily unavailable; try again in a few minutes",
        internal="internal error; try again later",
    )
    return SecurityHeaders(RequestConnections(app))
