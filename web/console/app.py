"""The analyst console and API (`abusepipe serve`): one ASGI app on the store.

`/api/v1/...` returns exactly the documents `abusepipe ... --format json` prints; every page links its
JSON twin. Errors are one line: `{"error": "..."}` with 400/401/403/404/503 for the API, a short page for
the browser; never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp

from abusepipe import __version__
from abusepipe.errors import ConfigError
from blocklist.policy import ListingPolicy
from sinks.mailer import OutboxSender
from sinks.store import ReportStore
from web.connections import RequestConnections
from web.console import api, blocklist, pages
from web.console.auth import Denied, LoginThrottle, NotFound, TokenCache
from web.console.rankings import RankingCache
from web.errors import handle_errors
from web.headers import SecurityHeaders

HERE = Path(__file__).resolve().parent
log = logging.getLogger("abusepipe.console")


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    store: ReportStore
    tls: bool = False
    policy: ListingPolicy = field(default_factory=ListingPolicy)
    portal_url: str = "http://127.0.0.1:8081/"
    mail_from: str = "abusepipe@localhost"
    sender: OutboxSender | None = None
    """Delivers the review queue's decision mails (the portal's outbox)."""


def create_app(config: ConsoleConfig) -> ASGIApp:
    """The console app, inside the security-headers middleware (outermost, so that even a 500 has them)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with config.sender.running() if config.sender is not None else nullcontext():
            yield

    app = FastAPI(
        lifespan=lifespan,
        title="abusepipe API",
        version=__version__,
        description="What `abusepipe ... --format json` prints, over HTTP (Authorization: Bearer <token>).",
        openapi_url=None,  # served behind authentication, at /api/v1/openapi.json
        docs_url=None,
        redoc_url=None,
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.autoescape = True  # every string shown comes from mail
    templates.env.globals["version"] = __version__
    app.state.store = config.store
    app.state.templates = templates
    app.state.throttle = LoginThrottle()
    app.state.rankings = RankingCache()
    app.state.tokens = TokenCache()
    app.state.tls = config.tls
    app.state.policy = config.policy
    app.state.portal_url = config.portal_url
    app.state.mail_from = config.mail_from
    app.state.sender = config.sender
    app.include_router(blocklist.router)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def page(request: Request, status: int, message: str) -> Response:
        if status == 401:
            return pages.login_page(request, status=401, message=message)
        return templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message, "caller": None}, status_code=status
        )

    def answer(request: Request, status: int, message: str) -> Response:
        message = " ".join(message.split())[:300]
        if is_api(request):
            headers = {"WWW-Authenticate": 'Bearer realm="abusepipe"'} if status == 401 else None
            return JSONResponse({"error": message}, status_code=status, headers=headers)
        return page(request, status, message)

    @app.exception_handler(Denied)
    async def denied(request: Request, exc: Denied) -> Response:
        return answer(request, exc.status, exc.message)

    @app.exception_handler(ConfigError)
    async def bad_request(request: Request, exc: ConfigError) -> Response:
        return answer(request, 400, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return answer(request, 404, exc.message)

    handle_errors(
        app,
        answer,
        log=log,
        unavailable="the store is unavailable; try again",
        internal="internal error (logged)",
    )
    return SecurityHeaders(RequestConnections(app))
