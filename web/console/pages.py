"""The console's pages: server-rendered (Jinja2, autoescaped), no script; each links its JSON twin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from parsers.microsoft import is_guid
from sinks import access
from sinks.kinds import KINDS
from sinks.queries import dead_letter, offender_detail, report_document, report_raw
from web.charts import bar_chart
from web.connections import db
from web.console import data
from web.console.api import (
    Kind,
    Offset,
    Since,
    Top,
    offenders_document,
    rankings_of,
    raw_download,
    record,
    token_document,
)
from web.console.auth import COOKIE, Caller, Denied, NotFound, check_csrf, client_of, identify, require

router = APIRouter()
RAW_SHOWN = 256 * 1024
"""Bytes of an original shown on its page (all of it is in the download)."""


def render(
    request: Request, template: str, caller: Caller | None, status: int = 200, **context: Any
) -> Response:
    templates = request.app.state.templates
    return templates.TemplateResponse(  # type: ignore[no-any-return]
        request, template, {"caller": caller, **context}, status_code=status
    )


def page_caller(request: Request, role: access.Role = "viewer") -> Caller:
    caller = identify(request)
    require(caller, role)
    return caller


def login_page(request: Request, *, status: int = 200, message: str = "") -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return render(request, "login.html", None, status=status, message=message, next=_safe_next(target))


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return "/" if target.startswith("/login") else target


@router.get("/healthz", include_in_schema=False)
def healthz(request: Request) -> Any:
    with db(request) as connection:
        connection.exec_driver_sql("SELECT 1")
    return {"status": "ok"}


@router.get("/login", include_in_schema=False)
def login_form(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", None, message="", next=_safe_next(next))


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    token: Annotated[str, Form(max_length=300)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    client = client_of(request)
    throttle = request.app.state.throttle
    if not throttle.allowed(client):
        return render(
            request,
            "login.html",
            None,
            status=429,
            message="too many failed logins: wait a few minutes",
            next=_safe_next(next),
        )
    now = datetime.now(UTC)
    with db(request, write=True) as connection:
        principal = access.authenticate(connection, token, now=now)
        if principal is None:
            throttle.failed(client)
            return render(
                request,
                "login.html",
                None,
                status=401,
                message="that token is not valid",
                next=_safe_next(next),
            )
        session = access.open_session(connection, principal, now=now)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        session.cookie,
        max_age=int(access.SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=bool(request.app.state.tls or request.url.scheme == "https"),
        path="/",
    )
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    caller = await page_caller_async(request)
    await check_csrf(request, caller)
    with db(request, write=True) as connection:
        access.close_session(connection, request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def page_caller_async(request: Request, role: access.Role = "viewer") -> Caller:
    caller: Caller = await run_in_threadpool(page_caller, request, role)
    return caller


@router.get("/", include_in_schema=False)
def overview(request: Request) -> Response:
    caller = page_caller(request)
    with db(request) as connection:
        document = data.overview(connection, now=datetime.now(UTC), rankings=rankings_of(request))
    hours = document["reports_per_hour"]
    chart = bar_chart(
        [h["reports"] for h in hours],
        [h["hour"][:13].replace("T", " ") + ":00" for h in hours],
        secondary=[h["junk_reports"] for h in hours],
        title="reports per hour, last 7 days (dark: junk)",
    )
    return render(request, "overview.html", caller, overview=document, chart=chart, twin="/api/v1/overview")


@router.get("/offenders", include_in_schema=False)
def offenders(
    request: Request,
    by: Kind = "ip",
    since: Since = "24h",
    top: Top = 50,
    sort: Literal["reports", "reporters"] = "reports",
    offset: Offset = 0,
) -> Response:
    caller = page_caller(request)
    rows = offenders_document(request, by, since or None, top, sort, offset)
    query = {"by": by, "since": since or "", "top": top, "sort": sort}
    return render(
        request,
        "offenders.html",
        caller,
        rows=rows,
        kinds=KINDS,
        query=query,
        offset=offset,
        previous=urlencode({**query, "offset": max(0, offset - top)}) if offset else None,
        following=urlencode({**query, "offset": offset + top})
        if len(rows) == top and offset + top <= 9000
        else None,
        twin="/api/v1/offenders?" + urlencode({**query, "offset": offset}),
        csv="/api/v1/offenders?" + urlencode({**query, "offset": offset, "format": "csv"}),
    )


@router.get("/offenders/{kind}/{key:path}", include_in_schema=False)
def offender(
    request: Request, kind: Kind, key: str, days: Annotated[int, Query(ge=1, le=365)] = 30
) -> Response:
    caller = page_caller(request)
    with db(request) as connection:
        detail = offender_detail(connection, kind, key, now=datetime.now(UTC), days=days)
    if detail is None:
        raise NotFound(f"no reports for {kind} {key[:100]}")
    document = detail.as_dict()
    if not caller.principal.may("analyst"):
        document = data.without_reporters(document)
    counted = {day["day"]: day for day in document["timeline"]}
    today = datetime.now(UTC).date()
    days_shown = [(today - timedelta(days=back)).isoformat() for back in range(days - 1, -1, -1)]
    timeline = [counted.get(day, {"day": day, "reports": 0, "all_reports": 0}) for day in days_shown]
    chart = bar_chart(
        [day["all_reports"] for day in timeline],
        [day["day"] for day in timeline],
        secondary=[day["reports"] for day in timeline],
        title=f"reports per day, last {days} days (dark: junk)",
        height=120,
    )
    return render(
        request,
        "offender.html",
        caller,
        offender=document,
        chart=chart,
        twin=f"/api/v1/offenders/{kind}/{quote(key, safe='/')}",  # as the templates quote it
    )


@router.get("/reports/{report_id}", include_in_schema=False)
def report(request: Request, report_id: str) -> Response:
    caller = page_caller(request, "analyst")
    report_id = report_id[:64]
    with db(request) as connection:
        document = report_document(connection, report_id)
        raw = report_raw(connection, report_id) if document is not None else None
    if document is None:
        raise NotFound(f"no report {report_id}")
    if raw is not None:
        record(request, caller, "raw-view", f"report {report_id}")
    hops = document.get("original", {}).get("received", [])
    boundary = next((index for index, hop in enumerate(hops) if not hop.get("trusted")), None)
    return render(
        request,
        "report.html",
        caller,
        report=document,
        hops=hops,
        boundary=boundary,
        raw=_shown(raw),
        raw_size=len(raw) if raw is not None else None,
        twin=f"/api/v1/reports/{report_id}",
    )


def _shown(raw: bytes | None) -> str | None:
    """The original as text to escape and show, never to render."""
    if raw is None:
        return None
    return raw[:RAW_SHOWN].decode("utf-8", "replace")


@router.get("/reports/{report_id}/raw", include_in_schema=False)
def report_download(request: Request, report_id: str) -> Response:
    caller = page_caller(request, "analyst")
    with db(request) as connection:
        raw = report_raw(connection, report_id[:64])
    if raw is None:
        raise NotFound(f"no original bytes for report {report_id[:64]}")
    record(request, caller, "raw-view", f"report {report_id[:64]} (download)")
    return raw_download(raw, f"{report_id[:64]}.eml")


@router.get("/deadletters", include_in_schema=False)
def deadletters(request: Request, limit: Top = 100) -> Response:
    caller = page_caller(request, "analyst")
    with db(request) as connection:
        rows = data.dead_letter_rows(connection, limit)
    return render(request, "deadletters.html", caller, rows=rows, twin=f"/api/v1/deadletters?limit={limit}")


@router.get("/deadletters/{letter_id}", include_in_schema=False)
def deadletter(request: Request, letter_id: int) -> Response:
    caller = page_caller(request, "analyst")
    with db(request) as connection:
        found = dead_letter(connection, letter_id)
    if found is None:
        raise NotFound(f"no dead letter {letter_id}")
    letter, raw = found
    record(request, caller, "raw-view", f"dead letter {letter_id}")
    return render(
        request,
        "deadletter.html",
        caller,
        letter=letter,
        raw=_shown(raw),
        raw_size=len(raw),
        twin=f"/api/v1/deadletters/{letter_id}",
    )


@router.get("/deadletters/{letter_id}/raw", include_in_schema=False)
def deadletter_download(request: Request, letter_id: int) -> Response:
    caller = page_caller(request, "analyst")
    with db(request) as connection:
        found = dead_letter(connection, letter_id)
    if found is None:
        raise NotFound(f"no dead letter {letter_id}")
    record(request, caller, "raw-view", f"dead letter {letter_id} (download)")
    return raw_download(found[1], f"deadletter-{letter_id}.eml")


@router.get("/search", include_in_schema=False)
def search(request: Request, q: Annotated[str, Query(max_length=500)] = "") -> Response:
    caller = page_caller(request)
    found: dict[str, Any] | None = None
    if q.strip():
        with db(request) as connection:
            found = data.search(connection, q)
        if not caller.principal.may("analyst"):
            found["reports"] = []
    return render(
        request,
        "search.html",
        caller,
        q=q,
        found=found,
        twin="/api/v1/search?" + urlencode({"q": q}) if q else None,
        is_guid=is_guid,
    )


@router.get("/admin/tokens", include_in_schema=False)
def tokens(request: Request) -> Response:
    caller = page_caller(request, "admin")
    with db(request) as connection:
        rows = [token_document(info) for info in access.list_tokens(connection)]
    return render(
        request, "tokens.html", caller, rows=rows, created=None, roles=access.ROLES, twin="/api/v1/tokens"
    )


@router.post("/admin/tokens", include_in_schema=False)
async def create_token(request: Request) -> Response:
    caller = await page_caller_async(request, "admin")
    await check_csrf(request, caller)
    form = await request.form()
    name, role, expires = (
        str(form.get("name") or ""),
        str(form.get("role") or ""),
        str(form.get("expires") or ""),
    )
    return await run_in_threadpool(_create_token, request, caller, name, role, expires)


def _create_token(request: Request, caller: Caller, name: str, role: str, expires: str) -> Response:
    now = datetime.now(UTC)
    lifetime = access.parse_lifetime(expires) if expires.strip() else None
    with db(request, write=True) as connection:
        token = access.create_audited(
            connection,
            name,
            role,
            actor=caller.principal.name,
            client=caller.client,
            now=now,
            expires=lifetime,
        )
        rows = [token_document(info) for info in access.list_tokens(connection)]
    return render(
        request,
        "tokens.html",
        caller,
        status=201,
        rows=rows,
        created={"name": name, "role": role, "token": token},
        roles=access.ROLES,
        twin="/api/v1/tokens",
    )


@router.post("/admin/tokens/{which}/revoke", include_in_schema=False)
async def revoke_token(request: Request, which: str) -> Response:
    caller = await page_caller_async(request, "admin")
    await check_csrf(request, caller)
    return await run_in_threadpool(_revoke_token, request, caller, which)


def _revoke_token(request: Request, caller: Caller, which: str) -> Response:
    now = datetime.now(UTC)
    with db(request, write=True) as connection:
        info = access.revoke_audited(
            connection, which[:100], actor=caller.principal.name, client=caller.client, now=now
        )
        if info is None:
            raise NotFound(f"no token {which[:100]}")
    request.app.state.tokens.clear()  # committed: in force here at once, not after the cache's seconds
    return RedirectResponse("/admin/tokens", status_code=303)


@router.get("/admin/audit", include_in_schema=False)
def audit(request: Request, limit: Top = 200) -> Response:
    caller = page_caller(request, "admin")
    with db(request) as connection:
        entries = access.audit_entries(connection, limit=limit)
    return render(request, "audit.html", caller, entries=entries, twin=f"/api/v1/audit?limit={limit}")


__all__ = ["Denied", "login_page", "router"]
