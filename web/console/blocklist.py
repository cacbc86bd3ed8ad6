"""The blocked-senders list in the console: the listings (viewers), one listing with its history and the
delisting requests from the portal (analysts: they name people), and the review queue's decisions
(admins), each page with its JSON twin under `/api/v1/blocklist`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from blocklist import delist
from blocklist import listings as bl
from blocklist.keys import normalize
from blocklist.show import describe
from sinks import access
from web.connections import db
from web.console.api import Kind, caller_with
from web.console.auth import Caller, NotFound, check_csrf
from web.console.pages import page_caller, page_caller_async, render

router = APIRouter()
State = Literal["listed", "delisted", "expired"]
RequestState = Literal["queued", "mailed", "delisted", "approved", "refused", "not-listed", "all"]
Limit = Annotated[int, Query(ge=1, le=5000)]


def _listings(request: Request, state: State | None, kind: Kind | None, limit: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    with db(request) as connection:
        found = bl.listings(connection, now, state=state, kinds=[kind] if kind else [], limit=limit)
    return [listing.document(now) for listing in found]


def _requests(request: Request, state: RequestState, limit: int) -> list[dict[str, Any]]:
    with db(request) as connection:
        found = delist.pending(connection, state=None if state == "all" else state, limit=limit)
    return [asked.document() for asked in found]


def _describe(request: Request, kind: str, key: str) -> dict[str, Any]:
    key = normalize(kind, key)
    with db(request) as connection:
        document = describe(connection, request.app.state.policy, kind, key, datetime.now(UTC))
    if document["listing"] is None and not document["covered_by"] and not document["history"]:
        raise NotFound(f"{kind} {key} was never listed")
    return document


# --- API ------------------------------------------------------------------------------------------------


@router.get("/api/v1/blocklist", summary="= abusepipe blocklist list --format json")
def api_listings(
    request: Request, state: State | None = None, kind: Kind | None = None, limit: Limit = 1000
) -> Any:
    caller_with(request, "viewer")
    return _listings(request, state, kind, limit)


@router.get("/api/v1/blocklist/requests", summary="= abusepipe blocklist requests list --format json")
def api_requests(request: Request, state: RequestState = "queued", limit: Limit = 200) -> Any:
    caller_with(request, "analyst")
    return _requests(request, state, limit)


class Decision(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="sent to the requester")


@router.post(
    "/api/v1/blocklist/requests/{request_id}/{verb}",
    summary="= abusepipe blocklist requests approve|refuse ID --reason TEXT (admin)",
)
def api_decide(request: Request, request_id: int, verb: Literal["approve", "refuse"], body: Decision) -> Any:
    caller = caller_with(request, "admin")
    return _decide(request, caller, request_id, verb, body.reason)


@router.get(
    "/api/v1/blocklist/{kind}/{key:path}", summary="= abusepipe blocklist show KIND KEY --format json"
)
def api_listing(request: Request, kind: Kind, key: str) -> Any:
    caller_with(request, "analyst")  # the history names who acted
    return _describe(request, kind, key)


def _decide(request: Request, caller: Caller, request_id: int, verb: str, reason: str) -> dict[str, Any]:
    from web.portal.review import decide_and_tell  # noqa: PLC0415 (the mail templates load on first use)

    now = datetime.now(UTC)
    state = request.app.state
    with db(request, write=True) as connection:
        done = decide_and_tell(
            connection,
            state.policy,
            request_id,
            approve=verb == "approve",
            reason=reason,
            actor=f"console:{caller.principal.name}",
            now=now,
            mail_from=state.mail_from,
            portal_url=state.portal_url,
        )
        access.audit(
            connection,
            actor=caller.principal.name,
            action=f"delist-{verb}",
            target=f"request {request_id} ({done.request.ip})",
            client=caller.client,
            now=now,
        )
    if state.sender is not None:
        state.sender.wake()
    return {**done.request.document(), "changes": [change.document() for change in done.changes]}


# --- pages ----------------------------------------------------------------------------------------------


@router.get("/blocklist", include_in_schema=False)
def listings_page(
    request: Request, state: State | None = "listed", kind: Kind | None = None, limit: Limit = 500
) -> Response:
    caller = page_caller(request, "viewer")
    rows = _listings(request, state, kind, limit)
    query = "&".join(f"{k}={v}" for k, v in (("state", state), ("kind", kind)) if v)
    return render(
        request,
        "blocklist.html",
        caller,
        rows=rows,
        state=state,
        kind=kind,
        twin=f"/api/v1/blocklist?{query}",
    )


@router.get("/blocklist/requests", include_in_schema=False)
def requests_page(request: Request, state: RequestState = "queued", limit: Limit = 200) -> Response:
    caller = page_caller(request, "analyst")
    rows = _requests(request, state, limit)
    return render(
        request,
        "delist_requests.html",
        caller,
        rows=rows,
        state=state,
        twin=f"/api/v1/blocklist/requests?state={state}",
    )


@router.post("/blocklist/requests/{request_id}/{verb}", include_in_schema=False)
async def decide_page(request: Request, request_id: int, verb: Literal["approve", "refuse"]) -> Response:
    caller = await page_caller_async(request, "admin")
    await check_csrf(request, caller)
    form = await request.form()
    reason = str(form.get("reason") or "")  # delist.decide requires one (400 without)
    await run_in_threadpool(_decide, request, caller, request_id, verb, reason)
    return RedirectResponse("/blocklist/requests", status_code=303)


@router.get("/blocklist/{kind}/{key:path}", include_in_schema=False)
def listing_page(request: Request, kind: Kind, key: str) -> Response:
    caller = page_caller(request, "analyst")
    document = _describe(request, kind, key)
    return render(
        request,
        "listing.html",
        caller,
        doc=document,
        twin=f"/api/v1/blocklist/{kind}/{quote(document['key'], safe='/')}",  # as the templates quote it
    )
