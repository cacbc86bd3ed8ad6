"""Exchange Online headers: anti-spam verdicts and the tenant/origin headers Microsoft stamps."""

from __future__ import annotations

import re

from parsers.headers import HeaderIndex
from parsers.received import IPAddress, parse_ip
from schemas import ExchangeVerdict

FOREFRONT_HEADERS = ("x-forefront-antispam-report", "x-forefront-antispam-report-untrusted")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CONNECTOR = re.compile(
    r"TenantId=(?P<tenant>[0-9a-fA-F-]{36})\s*;\s*Ip=\[?(?P<ip>[^\];]*)\]?\s*(?:;\s*Helo=\[?(?P<helo>[^\];]*)\]?)?",
    re.IGNORECASE,
)
_SENDER_IP_IS = re.compile(r"sender IP is\s+\[?([0-9A-Fa-f:.]+)\]?", re.IGNORECASE)
_CLIENT_IP = re.compile(r"client-ip=\[?([0-9A-Fa-f:.]+)\]?", re.IGNORECASE)
NULL_CIP = "255.255.255.255"


def is_guid(value: str | None) -> bool:
    return bool(value and _GUID.match(value.strip()))


def parse_verdict(header: str, value: str) -> ExchangeVerdict:
    fields: dict[str, str] = {}
    for item in value.split(";"):
        key, sep, val = item.partition(":")
        if sep:
            fields.setdefault(key.strip().upper(), val.strip())
    scl: int | None
    try:
        scl = int(fields["SCL"]) if fields.get("SCL") else None
    except ValueError:
        scl = None
    return ExchangeVerdict(
        header=header,
        direction=fields.get("DIR") or None,
        cip=fields.get("CIP") or None,
        country=fields.get("CTRY") or None,
        scl=scl,
        sfv=fields.get("SFV") or None,
        category=fields.get("CAT") or None,
        ptr=fields.get("PTR") or None,
        helo=fields.get("H") or None,
    )


def verdicts(headers: HeaderIndex) -> list[ExchangeVerdict]:
    return [parse_verdict(name, value) for name in FOREFRONT_HEADERS for value in headers.all(name)]


class ConnectorAttribution:
    """`X-MS-Exchange-CrossTenant-OriginalAttributedTenantConnectingIp`: sending tenant and real origin."""

    __slots__ = ("helo", "ip", "raw", "tenant_id")

    def __init__(self, tenant_id: str, ip: IPAddress | None, helo: str | None, raw: str) -> None:
        self.tenant_id = tenant_id
        self.ip = ip
        self.helo = helo
        self.raw = raw


def connector_attribution(headers: HeaderIndex) -> ConnectorAttribution | None:
    raw = headers.get("x-ms-exchange-crosstenant-originalattributedtenantconnectingip")
    if not raw:
        return None
    match = _CONNECTOR.search(raw)
    if not match or not is_guid(match.group("tenant")):
        return None
    return ConnectorAttribution(
        match.group("tenant").lower(), parse_ip(match.group("ip")), match.group("helo") or None, raw
    )


def microsoft_stamped_sender_ips(headers: HeaderIndex) -> list[tuple[str, str]]:
    """(ip, header) pairs in which EOP recorded the connecting IP it accepted the message from."""
    out: list[tuple[str, str]] = []
    for value in headers.all("authentication-results"):
        match = _SENDER_IP_IS.search(value)
        if match:
            out.append((match.group(1), "Authentication-Results"))
    for value in headers.all("received-spf"):
        if "protection.outlook.com" in value.lower():
            match = _CLIENT_IP.search(value)
            if match:
                out.append((match.group(1), "Received-SPF"))
    for value in headers.all("x-forefront-antispam-report"):
        verdict = parse_verdict("x-forefront-antispam-report", value)
        if verdict.direction == "INB" and verdict.cip:
            out.append((verdict.cip, "X-Forefront-Antispam-Report"))
    return out
