"""The sender's path: look up an IP, ask for delisting, confirm by the mailed link, delist (or wait for
review). Each page has a JSON twin under `/api/v1`; errors are a page (or `{"error": ...}`) in the
requester's language, never an internal detail."""

from __future__ import annotations

import hmac
import ipaddress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from blocklist import delist
from blocklist.delist import LinkInvalid, RequestRefused
from sinks import outbox
from web.connections import db, reads
from web.portal import mails

if TYPE_CHECKING:
    from web.portal.app import Portal, PortalConfig

router = APIRouter()
MAX_FIELD = 320


def _portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def _now() -> datetime:
    return datetime.now(UTC)


def client_of(request: Request) -> str:
    """The requester's address for rate limits: an IPv6 client by its /64 (one host holds them all)."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _cross_site(request: Request) -> bool:
    """A browser's form posted from another site (the Origin header names it)."""
    origin = request.headers.get("origin") or ""
    return bool(origin) and origin != "null" and origin.split("://", 1)[-1] != request.headers.get("host")


@router.get("/healthz", include_in_schema=False)
def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok\n")


@router.get("/robots.txt", include_in_schema=False)
def robots() -> PlainTextResponse:
    return PlainTextResponse("User-agent: *\nDisallow: /delist/\nDisallow: /api/\n")


def _status(request: Request, ip: str) -> delist.Status:
    portal = _portal(request)
    with reads(request) as connection:
        return delist.status(connection, portal.config.policy, portal.config.limits, ip, _now())


@router.get("/")
def index(request: Request, ip: str = "") -> Response:
    portal = _portal(request)
    context: dict[str, Any] = {"ip": ip[:MAX_FIELD], "email": "", "status": None, "error": None}
    if ip.strip():
        try:
            context["status"] = _status(request, ip[:MAX_FIELD])
        except RequestRefused as exc:
            context["error"] = exc.code
            return portal.render(request, "index.html", context, status=400)
    return portal.render(request, "index.html", context)


@router.get("/api/v1/lookup")
def api_lookup(request: Request, ip: str) -> Response:
    try:
        return JSONResponse(_status(request, ip[:MAX_FIELD]).document())
    except RequestRefused as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)


@router.post("/request")
def ask(
    request: Request,
    ip: Annotated[str, Form(max_length=MAX_FIELD)] = "",
    email: Annotated[str, Form(max_length=MAX_FIELD)] = "",
) -> Response:
    portal = _portal(request)
    config = portal.config
    lang = portal.lang(request)
    context: dict[str, Any] = {"ip": ip, "email": email, "status": None, "error": None}

    def refused(code: str, message: str, status: int) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": message, "code": code}, status_code=status)
        context["error"] = code
        return portal.render(request, "index.html", context, status=status)

    if _cross_site(request):
        return refused("cross-site", "cross-site request refused", 403)
    try:
        ip, email = delist.clean_ip(ip), delist.clean_email(email)
    except RequestRefused as exc:
        return refused(exc.code, str(exc), 400)
    now = _now()
    try:
        with db(request, write=True) as connection:
            created, token = delist.create(
                connection,
                ip=ip,
                email=email,
                client=client_of(request),
                lang=lang,
                limits=config.limits,
                now=now,
            )
            message = mails.confirmation(
                sender=config.mail_from,
                request=created,
                link=portal.link(token),
                minutes=_minutes(config),
                portal=config.portal_url,
                now=now,
            )
            outbox.enqueue(connection, message, purpose="delist-confirm", now=now)
    except RequestRefused as exc:
        if exc.code == "not-listed":
            context["status"] = _status(request, ip)
            return refused(exc.code, str(exc), 409 if _wants_json(request) else 200)
        return refused(exc.code, str(exc), 429)
    if config.sender is not None:
        config.sender.wake()
    if _wants_json(request):
        return JSONResponse({"state": "mailed", "ip": ip, "email": email}, status_code=202)
    context = {"ip": ip, "email": email, "minutes": _minutes(config)}
    return portal.render(request, "sent.html", context, status=202)


def _minutes(config: PortalConfig) -> int:
    return round(config.limits.link_lifetime.total_seconds() / 60)


def _link_error(request: Request, exc: LinkInvalid) -> Response:
    portal = _portal(request)
    status = {"unknown": 404, "used": 410, "expired": 410, "other-ip": 400}.get(exc.code, 400)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc), "code": exc.code}, status_code=status)
    return portal.render(
        request, "error.html", {"status": status, "code": exc.code, "message": str(exc)}, status=status
    )


@router.get("/delist/{token}")
def confirm_page(request: Request, token: str) -> Response:
    portal = _portal(request)
    try:
        with reads(request) as connection:
            asked = delist.by_token(connection, token, _now())
    except LinkInvalid as exc:
        return _link_error(request, exc)
    status = _status(request, asked.ip)
    context = {
        "asked": asked,
        "status": status,
        "token": token,
        "csrf": portal.csrf(delist.token_hash(token)),
    }
    return portal.render(request, "confirm.html", context)


@router.post("/delist/{token}")
def confirm(
    request: Request,
    token: str,
    ip: Annotated[str, Form(max_length=MAX_FIELD)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    portal = _portal(request)
    config = portal.config
    expected = portal.csrf(delist.token_hash(token))
    if _cross_site(request) or not hmac.compare_digest(csrf.encode(), expected.encode()):
        return portal.render(
            request, "error.html", {"status": 403, "code": "csrf", "message": "form expired"}, status=403
        )
    try:
        with db(request, write=True) as connection:
            asked, outcome = delist.confirm(
                connection, config.policy, config.limits, token=token, ip=ip or "-", now=_now()
            )
    except LinkInvalid as exc:
        return _link_error(request, exc)
    except RequestRefused as exc:
        return _link_error(request, LinkInvalid("other-ip", str(exc)))
    return portal.render(
        request,
        "done.html",
        {"asked": asked, "outcome": outcome, "refresh": max(60, round(config.policy_refresh * 2))},
    )
