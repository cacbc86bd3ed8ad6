"""The error answers both web apps share: one line (a JSON `{"error": ...}` or a short page, as `answer`
renders it), never a traceback or an internal detail."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from abusepipe.errors import Unavailable

Answer = Callable[[Request, int, str], Response]


def handle_errors(
    app: FastAPI, answer: Answer, *, log: logging.Logger, unavailable: str, internal: str
) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return answer(request, 400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return answer(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Unavailable)
    async def store_away(request: Request, exc: Unavailable) -> Response:
        log.warning("%s", exc)
        return answer(request, 503, unavailable)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        return answer(request, 500, internal)
