"""What the console shows, as documents: the same ones the CLI prints with `--format json`, and the few
the CLI has no command for (overview, search). Pure functions of a connection and `now`."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from abusepipe.errors import ConfigError
from parsers.attribution import network_of
from parsers.microsoft import is_guid
from parsers.urls import registrable_domain
from sinks import models as m
from sinks.kinds import KINDS
from sinks.queries import OffenderRow, dead_letters, utc
from sinks.stored import epoch_hour
from web.console.rankings import RankingCache, store_version

OFFENDER_COLUMNS = ["kind", "key", "reports", "reporters", "all_reports", "first_seen", "last_seen"]
DOMAIN_KINDS = ("from_domain", "mail_from_domain", "dkim_domain", "url_domain")
_REPORT_ID = re.compile(r"[0-9a-f]{32}")
_DOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}[a-z0-9_])?)+"
)
MAX_SEARCH = 200


def offender_rows(rows: list[OffenderRow]) -> list[dict[str, Any]]:
    """`abusepipe offenders --format json`: these fields, in this order."""
    return [{column: getattr(row, column) for column in OFFENDER_COLUMNS} for row in rows]


def dead_letter_rows(connection: Connection, limit: int) -> list[dict[str, Any]]:
    """`abusepipe deadletter list --format json`."""
    columns = ["id", "received_at", "source", "reason", "size"]
    return [{c: getattr(letter, c) for c in columns} for letter in dead_letters(connection, limit=limit)]


def overview(
    connection: Connection,
    *,
    now: datetime,
    days: int = 7,
    top: int = 5,
    rankings: RankingCache | None = None,
) -> dict[str, Any]:
    """Reports per hour over `days`, totals, and the top offenders of every kind over 24 hours."""
    rankings = rankings or RankingCache(size=len(KINDS))
    first = epoch_hour(now - timedelta(days=days)) + 1
    last = epoch_hour(now)
    h = m.report_hours
    rows = {
        int(hour): (int(reports), int(junk), int(dead))
        for hour, reports, junk, dead in connection.execute(
            select(h.c.hour, h.c.reports, h.c.junk_reports, h.c.dead_letters).where(h.c.hour >= first)
        ).all()
    }
    hours = [
        {
            "hour": datetime.fromtimestamp(hour * 3600, UTC).isoformat(),
            "reports": rows.get(hour, (0, 0, 0))[0],
            "junk_reports": rows.get(hour, (0, 0, 0))[1],
            "dead_letters": rows.get(hour, (0, 0, 0))[2],
        }
        for hour in range(first, last + 1)
    ]
    totals = connection.execute(
        select(
            func.coalesce(func.sum(h.c.reports), 0),
            func.coalesce(func.sum(h.c.junk_reports), 0),
            func.coalesce(func.sum(h.c.dead_letters), 0),
        )
    ).one()
    day = now - timedelta(hours=24)
    version = store_version(connection)
    return {
        "generated_at": now.isoformat(),
        "totals": {"reports": int(totals[0]), "junk_reports": int(totals[1]), "dead_letters": int(totals[2])},
        "window": {
            "reports": sum(x["reports"] for x in hours),
            "dead_letters": sum(x["dead_letters"] for x in hours),
            "days": days,
        },
        "reports_per_hour": hours,
        "top_offenders_24h": {
            kind: offender_rows(rankings.top(connection, kind, now=now, since=day, top=top, version=version))
            for kind in KINDS
        },
    }


def search(connection: Connection, query: str) -> dict[str, Any]:
    """Find what `query` names: an IP or CIDR, a domain, a tenant GUID, a Message-ID, a report id."""
    text = query.strip()
    if not text or len(text) > 500:
        raise ConfigError("search: give an IP, a CIDR, a domain, a tenant id, a Message-ID or a report id")
    lowered = text.lower()
    if _REPORT_ID.fullmatch(lowered):
        found = _reports_where(connection, m.reports.c.report_id == lowered)
        return {"query": text, "kind": "report_id", "offenders": [], "reports": found}
    if is_guid(lowered):
        return {
            "query": text,
            "kind": "tenant",
            "offenders": _offenders(connection, "tenant", [lowered]),
            "reports": [],
        }
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise ConfigError(f"search: {text[:60]!r} is not a network (CIDR)") from exc
        return {"query": text, "kind": "cidr", "offenders": _in_network(connection, network), "reports": []}
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        keys = [("ip", str(ip)), ("network", network_of(str(ip)) or "")]
        offenders = [row for kind, key in keys for row in _offenders(connection, kind, [key])]
        return {"query": text, "kind": "ip", "offenders": offenders, "reports": []}
    if "@" in text or text.startswith("<"):
        message_id = text.strip().strip("<>")
        found = _reports_where(connection, m.reports.c.message_id == message_id)
        return {"query": text, "kind": "message_id", "offenders": [], "reports": found}
    domain = lowered.rstrip(".")
    if _DOMAIN.fullmatch(domain):
        names = list(dict.fromkeys([domain, registrable_domain(domain) or domain]))  # URLs count by it
        offenders = [row for kind in DOMAIN_KINDS for row in _offenders(connection, kind, names)]
        return {"query": text, "kind": "domain", "offenders": offenders, "reports": []}
    raise ConfigError(f"search: {text[:60]!r} is no IP, CIDR, domain, tenant id, Message-ID or report id")


def _offenders(connection: Connection, kind: str, keys: list[str]) -> list[dict[str, Any]]:
    o = m.offenders
    rows = connection.execute(select(o).where(o.c.kind == kind, o.c.key.in_(keys))).all()
    return [_offender(row) for row in rows]


def _offender(row: Any) -> dict[str, Any]:
    return {
        "kind": row.kind,
        "key": row.key,
        "reports": int(row.junk_reports),
        "reporters": int(row.reporters),
        "all_reports": int(row.reports),
        "first_seen": utc(row.first_seen).isoformat(),
        "last_seen": utc(row.last_seen).isoformat(),
    }


def _in_network(
    connection: Connection, network: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> list[dict[str, Any]]:
    """IP offenders inside a network: candidates by their textual prefix, then checked exactly."""
    o = m.offenders
    query = select(o).where(o.c.kind == "ip")
    if network.version == 4:
        octets = network.network_address.exploded.split(".")[: network.prefixlen // 8]
        if octets:
            query = query.where(o.c.key.like(".".join(octets) + ".%"))
    else:
        query = query.where(o.c.key.like("%:%"))
    out = []
    for row in connection.execute(query.order_by(o.c.junk_reports.desc()).limit(20_000)).all():
        try:
            inside = ipaddress.ip_address(row.key) in network
        except ValueError:
            inside = False
        if inside:
            out.append(_offender(row))
            if len(out) >= MAX_SEARCH:
                break
    return out


def _reports_where(connection: Connection, condition: Any) -> list[dict[str, Any]]:
    r = m.reports
    rows = connection.execute(
        select(
            r.c.report_id,
            r.c.seen_at,
            r.c.format,
            r.c.feedback_type,
            r.c.source_ip,
            r.c.from_domain,
            r.c.subject,
        )
        .where(condition)
        .order_by(r.c.seen_at.desc())
        .limit(MAX_SEARCH)
    ).all()
    return [
        {
            "report_id": x.report_id,
            "seen_at": utc(x.seen_at).isoformat(),
            "format": x.format,
            "feedback_type": x.feedback_type,
            "source_ip": x.source_ip,
            "from_domain": x.from_domain,
            "subject": x.subject,
        }
        for x in rows
    ]


def without_reporters(detail: dict[str, Any]) -> dict[str, Any]:
    """An offender document for a viewer: who reported is personal data."""
    latest = [{**row, "reporter": None} for row in detail.get("latest_reports", [])]
    return {**detail, "latest_reports": latest}
