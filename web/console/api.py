"""`/api/v1`: the CLI's `--format json` documents over HTTP, with `Authorization: Bearer <token>`."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from abusepipe.output import render
from sinks import access
from sinks.kinds import KINDS
from sinks.queries import (
    dead_letter,
    offender_detail,
    parse_since,
    report_document,
    report_raw,
)
from web.connections import db
from web.console import data
from web.console.auth import Caller, Denied, NotFound, identify, require
from web.console.rankings import RankingCache

router = APIRouter(prefix="/api/v1")

Kind = Literal[
    "ip", "network", "tenant", "from_domain", "mail_from_domain", "dkim_domain", "url_domain", "asn"
]
assert set(Kind.__args__) == set(KINDS)  # type: ignore[attr-defined]
Top = Annotated[int, Query(ge=1, le=1000, description="how many (at most 1000)")]
Offset = Annotated[int, Query(ge=0, le=9000, description="skip this many, for paging")]
Since = Annotated[str | None, Query(max_length=40, description="a window (24h, 7d, 2w) or a date")]


def rankings_of(request: Request) -> RankingCache:
    cache: RankingCache = request.app.state.rankings
    return cache


def caller_with(request: Request, role: access.Role) -> Caller:
    caller = identify(request)
    require(caller, role)
    return caller


def record(request: Request, caller: Caller, action: str, target: str) -> None:
    """An audit row: raw evidence viewed, an export, a token change."""
    with db(request, write=True) as connection:
        access.audit(
            connection,
            actor=caller.principal.name,
            action=action,
            target=target,
            client=caller.client,
            now=datetime.now(UTC),
        )


def offenders_document(
    request: Request, by: str, since: str | None, top: int, sort: str, offset: int
) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    window = parse_since(since, now)
    with db(request) as connection:
        rows = rankings_of(request).top(connection, by, now=now, since=window, top=top + offset, sort=sort)  # type: ignore[arg-type]
    return data.offender_rows(rows[offset:])


@router.get("/overview", summary="Reports per hour (7 days), totals, top offenders of every kind (24 h)")
def overview(request: Request) -> Any:
    caller_with(request, "viewer")
    with db(request) as connection:
        return data.overview(connection, now=datetime.now(UTC), rankings=rankings_of(request))


@router.get(
    "/offenders", summary="= abusepipe offenders --by KIND [--since] [--top] [--sort] --format json|csv"
)
def offenders(
    request: Request,
    by: Kind,
    since: Since = None,
    top: Top = 20,
    sort: Literal["reports", "reporters"] = "reports",
    offset: Offset = 0,
    format: Literal["json", "csv"] = "json",
) -> Any:
    caller = caller_with(request, "analyst" if format == "csv" else "viewer")
    rows = offenders_document(request, by, since, top, sort, offset)
    if format == "csv":
        record(request, caller, "export", f"offenders by={by} since={since or ''} top={top} offset={offset}")
        body = render(rows, data.OFFENDER_COLUMNS, "csv") + "\n"
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="offenders-{by}.csv"'},
        )
    return rows


@router.get("/offenders/{kind}/{key:path}", summary="= abusepipe offender KIND KEY --format json")
def offender(request: Request, kind: Kind, key: str, days: Annotated[int, Query(ge=1, le=365)] = 30) -> Any:
    caller = caller_with(request, "viewer")
    with db(request) as connection:
        detail = offender_detail(connection, kind, key, now=datetime.now(UTC), days=days)
    if detail is None:
        raise NotFound(f"no reports for {kind} {key[:100]}")
    document = detail.as_dict()
    return document if caller.principal.may("analyst") else data.without_reporters(document)


@router.get("/reports/{report_id}", summary="= abusepipe report REPORT_ID")
def report(request: Request, report_id: str) -> Any:
    caller_with(request, "analyst")
    with db(request) as connection:
        document = report_document(connection, report_id[:64])
    if document is None:
        raise NotFound(f"no report {report_id[:64]}")
    return document


@router.get("/reports/{report_id}/raw", summary="= abusepipe report REPORT_ID --raw (the original bytes)")
def report_original(request: Request, report_id: str) -> Response:
    caller = caller_with(request, "analyst")
    with db(request) as connection:
        raw = report_raw(connection, report_id[:64])
    if raw is None:
        raise NotFound(f"no original bytes for report {report_id[:64]}")
    record(request, caller, "raw-view", f"report {report_id[:64]}")
    return raw_download(raw, f"{report_id[:64]}.eml")


@router.get("/deadletters", summary="= abusepipe deadletter list --format json")
def deadletters(request: Request, limit: Top = 50) -> Any:
    caller_with(request, "analyst")
    with db(request) as connection:
        return data.dead_letter_rows(connection, limit)


@router.get("/deadletters/{letter_id}", summary="One dead letter (its reason and source)")
def deadletter(request: Request, letter_id: int) -> Any:
    caller_with(request, "analyst")
    with db(request) as connection:
        found = dead_letter(connection, letter_id)
    if found is None:
        raise NotFound(f"no dead letter {letter_id}")
    return asdict(found[0])


@router.get("/deadletters/{letter_id}/raw", summary="= abusepipe deadletter show ID --raw")
def deadletter_original(request: Request, letter_id: int) -> Response:
    caller = caller_with(request, "analyst")
    with db(request) as connection:
        found = dead_letter(connection, letter_id)
    if found is None:
        raise NotFound(f"no dead letter {letter_id}")
    record(request, caller, "raw-view", f"dead letter {letter_id}")
    return raw_download(found[1], f"deadletter-{letter_id}.eml")


@router.get("/search", summary="Find an IP or CIDR, a domain, a tenant id, a Message-ID or a report id")
def search(request: Request, q: Annotated[str, Query(min_length=1, max_length=500)]) -> Any:
    caller = caller_with(request, "viewer")
    with db(request) as connection:
        found = data.search(connection, q)
    if not caller.principal.may("analyst"):
        found["reports"] = []  # a viewer sees aggregates only
    return found


class NewToken(BaseModel):
    name: str
    role: access.Role
    expires: str | None = None


@router.get("/tokens", summary="= abusepipe token list --format json (admin)")
def tokens(request: Request) -> Any:
    caller_with(request, "admin")
    with db(request) as connection:
        return [token_document(info) for info in access.list_tokens(connection)]


@router.post("/tokens", status_code=201, summary="= abusepipe token create (admin); the token is shown once")
def create_token(request: Request, body: NewToken) -> Any:
    caller = caller_with(request, "admin")
    lifetime = access.parse_lifetime(body.expires) if body.expires else None
    now = datetime.now(UTC)
    with db(request, write=True) as connection:
        token = access.create_audited(
            connection,
            body.name,
            body.role,
            actor=caller.principal.name,
            client=caller.client,
            now=now,
            expires=lifetime,
        )
    return JSONResponse({"name": body.name.strip(), "role": body.role, "token": token}, status_code=201)


@router.delete("/tokens/{which}", summary="= abusepipe token revoke NAME|ID (admin)")
def revoke_token(request: Request, which: str) -> Any:
    caller = caller_with(request, "admin")
    now = datetime.now(UTC)
    with db(request, write=True) as connection:
        info = access.revoke_audited(
            connection, which[:100], actor=caller.principal.name, client=caller.client, now=now
        )
        if info is None:
            raise NotFound(f"no token {which[:100]}")
    request.app.state.tokens.clear()  # committed: in force here at once, not after the cache's seconds
    return token_document(info)


@router.get("/audit", summary="= abusepipe audit --format json (admin)")
def audit(request: Request, limit: Top = 100) -> Any:
    caller_with(request, "admin")
    with db(request) as connection:
        return [asdict(entry) for entry in access.audit_entries(connection, limit=limit)]


def token_document(info: access.TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "role": info.role,
        "state": info.state,
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "revoked_at": info.revoked_at,
        "last_used_at": info.last_used_at,
    }


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request) -> Any:
    caller_with(request, "viewer")
    return request.app.openapi()


def raw_download(raw: bytes, name: str) -> Response:
    """Original bytes are never rendered: an attachment of an opaque type, whatever they contain."""
    return Response(
        raw,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


__all__ = ["Denied", "router"]
