"""The network owners' feed in the portal: ask for a key to a range, confirm by the link mailed to the
range's abuse contact at its registry (RDAP), then read `/feed/{key}.csv` (notify/feed.py)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import PlainTextResponse, Response

from abusepipe.errors import ConfigError
from notify import feed, rdap
from sinks import outbox
from web.connections import db, reads

if TYPE_CHECKING:
    from web.portal.app import Portal

router = APIRouter()


def _portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def _masked(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}…@{domain}"


def _page(request: Request, status: int = 200, **context: object) -> Response:
    defaults: dict[str, object] = {
        "network": "",
        "error": None,
        "sent_to": None,
        "confirm": None,
        "key_url": None,
    }
    return _portal(request).render(request, "feed.html", {**defaults, **context}, status=status)


@router.get("/feed")
def feed_form(request: Request) -> Response:
    return _page(request)


@router.post("/feed")
def feed_ask(request: Request, network: Annotated[str, Form(max_length=64)] = "") -> Response:
    from web.portal.pages import _cross_site, client_of  # noqa: PLC0415

    portal = _portal(request)
    config = portal.config
    if _cross_site(request):
        return _page(request, 403, network=network, error="cross-site")
    try:
        parsed = feed.parse_range(network)
    except ConfigError as exc:
        return _page(request, 400, network=network, error=str(exc))
    try:
        answer = rdap.lookup(config.rdap_url, str(parsed.network_address))
    except rdap.RdapError:
        return _page(request, 503, network=network, error="registry")
    if answer.contact is None:
        return _page(request, 404, network=network, error="no-contact")
    now = datetime.now(UTC)
    try:
        with db(request, write=True) as connection:
            token = feed.ask(connection, str(parsed), answer.contact, client_of(request), now)
            link = f"{config.portal_url.rstrip('/')}/feed/confirm/{token}"
            message = _confirmation(config.mail_from, answer.contact, str(parsed), link, now)
            outbox.enqueue(connection, message, purpose="feed-confirm", now=now)
    except ConfigError as exc:
        return _page(request, 429, network=network, error=str(exc))
    if config.sender is not None:
        config.sender.wake()
    return _page(request, 202, network=str(parsed), sent_to=_masked(answer.contact))


def _confirmation(sender: str, contact: str, network: str, link: str, now: datetime) -> EmailMessage:
    message = outbox.new_message(sender, contact, f"Confirm access to abuse data for {network}", now)
    message.set_content(
        f"Someone asked for a feed of the abuse reports we receive about {network}, for which your\n"
        "address is the abuse contact at the registry. To give them access, open this link within 30\n"
        f"minutes; it works once. If you did not ask, ignore this mail.\n\n{link}\n",
        cte="7bit",
    )
    return message


def _csrf(request: Request, token: str) -> str:
    secret = _portal(request).config.secret
    return hmac.new(secret, f"feed:{feed.digest(token)}".encode(), "sha256").hexdigest()


@router.get("/feed/confirm/{token}")
def feed_confirm_page(request: Request, token: str) -> Response:
    with reads(request) as connection:
        row = feed.pending(connection, token, datetime.now(UTC))
    if row is None:
        return _page(request, 410, error="link")
    return _page(request, network=row.network, confirm={"token": token, "csrf": _csrf(request, token)})


@router.post("/feed/confirm/{token}")
def feed_confirm(request: Request, token: str, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    from web.portal.pages import _cross_site  # noqa: PLC0415

    if _cross_site(request) or not hmac.compare_digest(csrf.encode(), _csrf(request, token).encode()):
        return _page(request, 403, error="csrf")
    with db(request, write=True) as connection:
        confirmed = feed.confirm(connection, token, datetime.now(UTC))
    if confirmed is None:
        return _page(request, 410, error="link")
    network, key = confirmed
    url = f"{_portal(request).config.portal_url.rstrip('/')}/feed/{key}.csv"
    return _page(request, network=network, key_url=url)


@router.get("/feed/{key}.csv")
def feed_csv(request: Request, key: str) -> Response:
    now = datetime.now(UTC)
    with reads(request) as connection:
        network = feed.network_of_key(connection, key)
        if network is None:
            return PlainTextResponse("no such feed (a revoked key reads nothing)\n", status_code=404)
        text = feed.as_csv(feed.rows(connection, network, now))
    name = network.replace("/", "_").replace(":", "-")
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="abuse-{name}.csv"'},
    )
