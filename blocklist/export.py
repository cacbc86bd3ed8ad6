"""Distribution: the listings in force as rbldnsd data, a Postfix `cidr:` access map, plain lists, JSON,
and a tenant list for header filters.

A file is rewritten only when its content changed, and atomically (a temporary file beside it, fsync,
rename): rbldnsd and Postfix reload on a changed modification time and must never read half a file. The
content carries no timestamp, so an unchanged list is an unchanged file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Text, cast, func, literal, or_, select, text
from sqlalchemy.dialects.postgresql import aggregate_order_by

from abusepipe.errors import AbusepipeError, ConfigError
from blocklist.policy import DOMAIN_KINDS
from sinks import models as m
from sinks.queries import utc

FORMATS = ("rbldnsd", "postfix", "plain", "json", "tenants")
LISTED_A = "127.0.0.2"
RBLDNSD_TTL = 300
"""Seconds resolvers may cache an answer: a delisting reaches the MTAs that ask within five minutes."""
RFC5782_TESTS = (("ip4", "127.0.0.2"), ("ip6", "::ffff:7f00:2"), ("domain", "test"))
"""RFC 5782 §5: every DNSBL lists these (and never 127.0.0.1, ::ffff:7f00:1 or `invalid`), so that a
client can check that it is asking the list it thinks it is."""
L = m.listings


class ExportError(AbusepipeError):
    """An export could not be written."""


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    key: str
    reason_code: str
    reason: str = ""
    origin: str = ""
    listed_at: str | None = None
    """ISO 8601, UTC (only when the entries were read `full`)."""
    expires_at: str | None = None
    document: str | None = None
    """Its JSON document, when the database wrote it (PostgreSQL: a million in a few seconds)."""


def _in_force(query: Any, now: datetime, kinds: Iterable[str]) -> Any:
    query = query.where(L.c.state == "listed", or_(L.c.expires_at.is_(None), L.c.expires_at > now))
    wanted = list(kinds)
    return query.where(L.c.kind.in_(wanted)) if wanted else query


def entries(
    connection: Connection, now: datetime, kinds: Iterable[str] = (), *, full: bool = True
) -> list[Entry]:
    """The listings in force now, in a stable order (kind, key). Without `full`, only what the DNS and
    MTA formats need: a million listings read in a few seconds."""
    columns: list[Any] = [L.c.kind, L.c.key, L.c.reason_code]
    if full:
        columns += [L.c.reason, L.c.origin, L.c.listed_at, L.c.expires_at]
    query = _in_force(select(*columns), now, kinds).order_by(L.c.kind, L.c.key)
    rows = connection.execute(query.execution_options(yield_per=20_000))
    if not full:
        return [Entry(kind, key, code) for kind, key, code in rows]
    return [
        Entry(kind, key, code, reason, origin, _iso(listed), _iso(expires))
        for kind, key, code, reason, origin, listed, expires in rows
    ]


JSON_CHUNK = 10_000
"""Documents PostgreSQL joins into one row of a JSON export."""


def json_export(connection: Connection, now: datetime, kinds: Iterable[str] = ()) -> tuple[str, int]:
    """The JSON export and how many listings it holds. PostgreSQL writes the documents and joins them
    10,000 to a row: reading a million rows through the driver took most of the time (a million
    listings: 15 s before, ~7 s so)."""
    if connection.dialect.name != "postgresql":
        listed = entries(connection, now, kinds)
        return render("json", listed, ""), len(listed)
    connection.execute(text("SET LOCAL TimeZone = 'UTC'"))  # timestamps in UTC, this transaction only
    numbered = _in_force(
        select(
            _json_document().label("document"),
            L.c.kind,
            L.c.key,
            (func.row_number().over(order_by=(L.c.kind, L.c.key)) / JSON_CHUNK).label("chunk"),
        ),
        now,
        kinds,
    ).subquery()
    separator = aggregate_order_by(literal(",\n"), numbered.c.kind, numbered.c.key)
    query = (
        select(func.string_agg(numbered.c.document, separator), func.count())
        .group_by(numbered.c.chunk)
        .order_by(numbered.c.chunk)
    )
    chunks, count = [], 0
    for joined, rows in connection.execute(query):
        chunks.append(joined)
        count += rows
    return "[" + ",\n".join(chunks) + "]\n", count


def _json_document() -> Any:
    """A listing's JSON document written by PostgreSQL: parsing a million timestamps in the driver and
    serialising a million documents in Python took most of a JSON export. The same fields, in the same
    order, as `as_json` writes (concatenated: json_build_object was slower and wrote wider); timestamps
    as PostgreSQL writes them in UTC (`json_export` sets the session's time zone), ISO 8601 like
    Python's."""

    def value(column: Any) -> Any:
        return func.coalesce(cast(func.to_json(column), Text), literal("null", Text))

    parts: list[Any] = [literal('{"kind":', Text), value(L.c.kind)]
    for name, column in (
        ("key", L.c.key),
        ("state", literal("listed", Text)),
        ("origin", L.c.origin),
        ("listed_at", L.c.listed_at),
        ("expires_at", L.c.expires_at),
        ("reason", L.c.reason),
        ("reason_code", L.c.reason_code),
    ):
        parts += [literal(f',"{name}":', Text), value(column)]
    parts.append(literal("}", Text))
    return func.concat(*parts)


def _iso(moment: datetime | None) -> str | None:
    return utc(moment).isoformat(timespec="microseconds") if moment is not None else None


def rejection(ip: str, portal_url: str) -> str:
    """The SMTP reply to a listed client: Exchange Online's wording, with this list's portal."""
    return (
        f"550 5.7.606 Access denied, banned sending IP [{ip}]. To request removal from this list please "
        f"visit {portal_url} and follow the directions."
    )


def _hex6(address: ipaddress.IPv6Address) -> str:
    """An IPv6 address in hex groups only: Python 3.13 writes IPv4-mapped ones dotted, which neither
    rbldnsd nor Postfix's cidr tables read."""
    if address.ipv4_mapped is None:
        return address.compressed
    mapped = int(address) & 0xFFFFFFFF
    return f"::ffff:{mapped >> 16:x}:{mapped & 0xFFFF:x}"


def _address(key: str) -> tuple[int, str] | None:
    """(IP version, the text rbldnsd and Postfix read) of an ip or network key."""
    if ":" not in key:  # the store's IPv4 keys are canonical already: a million parses saved
        if key.endswith("/32"):
            return 4, key[:-3]
        return 4, key
    if "." not in key and not key.endswith("/128"):
        return 6, key
    try:
        network = ipaddress.ip_network(key, strict=False)
    except ValueError:
        return None
    if network.version == 4:
        text = str(network.network_address) if network.prefixlen == 32 else str(network)
        return 4, text
    base = _hex6(network.network_address)
    return 6, base if network.prefixlen == 128 else f"{base}/{network.prefixlen}"


def _dns_name(domain: str) -> str | None:
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


def _txt_base(portal_url: str, *, with_ip: bool) -> str:
    url = portal_url if portal_url.endswith("/") or "?" in portal_url else portal_url + "/"
    if with_ip and "?" not in url:
        url += "?ip=$"
    url = url.replace("$", "$$").replace("?ip=$$", "?ip=$")
    return f"$= Listed by abusepipe ($=). To request removal visit {url}"


def rbldnsd(listed: list[Entry], portal_url: str) -> Iterator[str]:
    """rbldnsd `combined` data: IPv4 and IPv6 addresses and networks and domains in the base zone,
    tenants under `tenant.`; A 127.0.0.2, TXT naming the reason code and the portal."""
    ip4: list[str] = []
    ip6: list[str] = []
    domains: list[str] = []
    tenants: list[str] = []
    for entry in listed:
        code = entry.reason_code.replace(" ", "-") or "listed"
        if entry.kind in ("ip", "network"):
            parsed = _address(entry.key)
            if parsed is not None:
                (ip4 if parsed[0] == 4 else ip6).append(f"{parsed[1]} {code}")
        elif entry.kind in DOMAIN_KINDS:
            name = _dns_name(entry.key)
            if name is not None:
                domains.append(f"{name} {code}")
        elif entry.kind == "tenant":
            tenants.append(f"{entry.key} {code}")
    yield "# abusepipe's blocked-senders list as rbldnsd `combined` data:"
    yield "#   rbldnsd -b ADDRESS/PORT ZONE:combined:THIS_FILE"
    yield "# IPs and networks answer ZONE queries (RFC 5782), domains too, tenant GUIDs TENANT.tenant.ZONE."
    yield "# Written by `abusepipe blocklist export --format rbldnsd`; edits are overwritten."
    yield f"$TTL {RBLDNSD_TTL}"
    for dataset, subzone, rows, test, with_ip in (
        ("ip4trie:abusepipe-ip4", "@", ip4, "127.0.0.2 test", True),
        ("ip6trie:abusepipe-ip6", "@", ip6, "::ffff:7f00:2 test", True),
        ("dnset:abusepipe-domains", "@", sorted(set(domains)), "test test", False),
        ("dnset:abusepipe-tenants", "tenant", tenants, None, False),
    ):
        yield f"$DATASET {dataset} {subzone}"
        yield _txt_base(portal_url, with_ip=with_ip)
        yield f":{LISTED_A}:Listed"
        if test is not None:
            yield test
        yield from rows


def postfix(listed: list[Entry], portal_url: str) -> Iterator[str]:
    """A Postfix `cidr:` table for `check_client_access`: IPs first, then networks. Postfix reads it
    top to bottom on every lookup: for a long list, use the policy server or rbldnsd."""
    yield "# abusepipe's blocked-senders list as a Postfix cidr table:"
    yield "#   smtpd_client_restrictions = check_client_access cidr:/etc/postfix/abusepipe.cidr"
    yield "# Written by `abusepipe blocklist export --format postfix`; edits are overwritten."
    rows = [e for e in listed if e.kind == "ip"] + [e for e in listed if e.kind == "network"]
    for entry in rows:
        parsed = _address(entry.key)
        if parsed is not None:
            shown = entry.key if entry.kind == "network" else parsed[1]
            yield f"{parsed[1]}\t{rejection(shown, portal_url)}"


def plain(listed: list[Entry]) -> Iterator[str]:
    for entry in listed:
        yield entry.key


def tenants(listed: list[Entry]) -> Iterator[str]:
    """Tenant GUIDs, one per line: an Rspamd multimap on `X-MS-Exchange-CrossTenant-Id` reads it."""
    for entry in listed:
        if entry.kind == "tenant":
            yield entry.key


def as_json(listed: list[Entry]) -> Iterator[str]:
    """A JSON array, one listing a line (a million of them stay greppable)."""

    def document(e: Entry) -> str:
        if e.document is not None:
            return e.document
        fields = {
            "kind": e.kind,
            "key": e.key,
            "state": "listed",
            "origin": e.origin,
            "listed_at": e.listed_at,
            "expires_at": e.expires_at,
            "reason": e.reason,
            "reason_code": e.reason_code,
        }
        return json.dumps(fields, ensure_ascii=False)

    yield "[" + ",\n".join(document(e) for e in listed) + "]"


def render(fmt: str, listed: list[Entry], portal_url: str) -> str:
    if fmt == "rbldnsd":
        lines: Iterable[str] = rbldnsd(listed, portal_url)
    elif fmt == "postfix":
        lines = postfix(listed, portal_url)
    elif fmt == "plain":
        lines = plain(listed)
    elif fmt == "tenants":
        lines = tenants(listed)
    elif fmt == "json":
        lines = as_json(listed)
    else:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    text = "\n".join(lines)
    return text + "\n" if text else ""


def write_if_changed(path: Path, content: bytes) -> bool:
    """Replace `path` atomically with `content` unless it holds exactly that already; True if written."""
    try:
        if path.stat().st_size == len(content) and path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    directory = path.parent if str(path.parent) else Path(".")
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise ExportError(f"cannot write in {directory}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # read by rbldnsd or Postfix, which run as other users
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:  # the rename itself survives a crash only once the directory is on disk
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the file itself is complete
    return True
