"""A feed for network owners, like Microsoft's SNDS: the owner of a range proves control by a link mailed
to the range's abuse contact as its registry lists it (RDAP), then gets a key URL serving a CSV per IP
per day: reports, distinct reporters, trap hits, the feedback mix, first and last seen, a sample HELO and
MAIL FROM, and whether the IP is listed. Keys are random, stored as SHA-256, revocable
(`abusepipe feed revoke`). Never a reporter's or a trap's address, nor a message."""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from abusepipe.errors import ConfigError
from blocklist.listings import covering
from sinks import models as m
from sinks.queries import utc

F, R, LINKS = m.feed_keys, m.reports, m.report_offenders
WIDEST = {4: 16, 6: 40}
"""The widest range one key may read: 256 aggregation networks (/24 or /48) at most."""
AGGREGATE = {4: 24, 6: 48}
MAX_ROWS = 200_000
COLUMNS = [
    "ip", "day", "reports", "reporters", "trap_hits", "feedback_mix", "first_seen", "last_seen",
    "sample_helo", "sample_mail_from_domain", "listed",
]  # fmt: skip


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def parse_range(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network((text or "").strip(), strict=False)
    except ValueError:
        raise ConfigError("not a network: give a CIDR such as 192.0.2.0/24") from None
    if network.prefixlen < WIDEST[network.version]:
        raise ConfigError(f"wider than /{WIDEST[network.version]}: ask for each part of it")
    if not network.is_global:
        raise ConfigError("not a public network")
    return network


def aggregation_keys(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """The /24 or /48 offender keys that hold the range's addresses."""
    prefix = AGGREGATE[network.version]
    if network.prefixlen >= prefix:
        return [str(network.supernet(new_prefix=prefix))]
    return [str(sub) for sub in network.subnets(new_prefix=prefix)]


@dataclass
class _Day:
    reports: int = 0
    reporters: set[str] = field(default_factory=set)
    traps: int = 0
    feedback: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None
    helo: str = ""
    mail_from: str = ""


def rows(connection: Connection, network_text: str, now: datetime, *, days: int = 30) -> list[dict[str, Any]]:
    network = parse_range(network_text)
    since = now - timedelta(days=days)
    columns = (R.c.source_ip, R.c.seen_at, R.c.reporter, R.c.format, R.c.feedback_type, R.c.mail_from_domain)
    query = (
        select(*columns, R.c.document)
        .select_from(LINKS.join(R, R.c.report_id == LINKS.c.report_id))
        .where(
            LINKS.c.kind == "network",
            LINKS.c.key.in_(aggregation_keys(network)),
            LINKS.c.seen_at >= since,
            R.c.junk.is_(True),
        )
        .limit(MAX_ROWS)
    )
    days_seen: dict[tuple[str, str], _Day] = {}
    for row in connection.execute(query):
        try:
            if row.source_ip is None or ipaddress.ip_address(row.source_ip) not in network:
                continue
        except ValueError:
            continue
        moment = utc(row.seen_at)
        day = days_seen.setdefault((row.source_ip, moment.date().isoformat()), _Day())
        day.reports += 1
        day.reporters.add(row.reporter)
        day.traps += row.format == "trap"
        day.feedback[row.feedback_type] += 1
        day.first = moment if day.first is None else min(day.first, moment)
        day.last = moment if day.last is None else max(day.last, moment)
        if not day.helo or not day.mail_from:
            document = json.loads(row.document)
            day.helo = day.helo or str((document.get("source") or {}).get("helo") or "")[:100]
            day.mail_from = day.mail_from or str(row.mail_from_domain or "")[:100]
    listed = {ip: bool(covering(connection, ip, now)) for ip in {ip for ip, _ in days_seen}}
    out = []
    for (ip, day_text), day in sorted(days_seen.items(), key=lambda item: (item[0][1], item[0][0])):
        out.append(
            {
                "ip": ip,
                "day": day_text,
                "reports": day.reports,
                "reporters": len(day.reporters),
                "trap_hits": day.traps,
                "feedback_mix": ";".join(f"{k}:{v}" for k, v in sorted(day.feedback.items())),
                "first_seen": day.first.isoformat() if day.first else "",
                "last_seen": day.last.isoformat() if day.last else "",
                "sample_helo": day.helo,
                "sample_mail_from_domain": day.mail_from,
                "listed": "yes" if listed[ip] else "no",
            }
        )
    return out


def as_csv(found: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in found:
        # a HELO or MAIL FROM comes from the sender: no spreadsheet formula gets through
        writer.writerow(
            {k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v) for k, v in row.items()}
        )
    return out.getvalue()


# --- keys -----------------------------------------------------------------------------------------------


def ask(
    connection: Connection, network_text: str, contact: str, client: str, now: datetime, *, per_hour: int = 5
) -> str:
    """A request for a key to the range, confirmed by the returned link secret (mailed to `contact`)."""
    network = parse_range(network_text)
    recent = connection.execute(
        select(func.count()).where(F.c.client == client[:64], F.c.created_at > now - timedelta(hours=1))
    ).scalar()
    if int(recent or 0) >= per_hour:
        raise ConfigError("too many requests from your address; try again in an hour")
    token = secrets.token_urlsafe(32)
    connection.execute(
        insert(F).values(
            network=str(network),
            contact=contact[:254],
            client=client[:64],
            confirm_hash=digest(token),
            confirm_expires_at=now + timedelta(minutes=30),
            created_at=now,
        )
    )
    return token


def pending(connection: Connection, token: str, now: datetime) -> Any:
    row = connection.execute(select(F).where(F.c.confirm_hash == digest(token or ""))).first()
    if row is None or row.confirmed_at is not None or utc(row.confirm_expires_at) <= now:
        return None
    return row


def confirm(connection: Connection, token: str, now: datetime) -> tuple[str, str] | None:
    """(the range, its new key), once; None when the link is unknown, used or expired."""
    row = pending(connection, token, now)
    if row is None:
        return None
    key = secrets.token_urlsafe(32)
    done = connection.execute(
        update(F)
        .where(and_(F.c.id == row.id, F.c.confirmed_at.is_(None)))
        .values(confirmed_at=now, key_hash=digest(key))
    )
    return (row.network, key) if done.rowcount == 1 else None


def network_of_key(connection: Connection, key: str) -> str | None:
    row = connection.execute(
        select(F.c.network).where(F.c.key_hash == digest(key or ""), F.c.revoked_at.is_(None))
    ).first()
    return row.network if row is not None else None


def keys(connection: Connection) -> list[dict[str, Any]]:
    found = connection.execute(select(F).where(F.c.confirmed_at.is_not(None)).order_by(F.c.id))
    return [
        {
            "id": row.id,
            "network": row.network,
            "contact": row.contact,
            "confirmed_at": utc(row.confirmed_at).isoformat(),
            "revoked_at": utc(row.revoked_at).isoformat() if row.revoked_at else None,
        }
        for row in found
    ]


def revoke(connection: Connection, key_id: int, now: datetime) -> bool:
    done = connection.execute(
        update(F).where(and_(F.c.id == key_id, F.c.revoked_at.is_(None))).values(revoked_at=now)
    )
    return done.rowcount == 1
