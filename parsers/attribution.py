"""Find the offending source: the trusted-hop walk over `Received`, then Exchange Online tenant rules.

See "Attribution" in docs/DESIGN.md. Every value set here is paired with an `Evidence` row saying how it
was obtained; anything below the boundary is attacker-controlled and only ever a hint.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from parsers.forwarding import addressed_domains, recipient_relay
from parsers.headers import Defects, HeaderIndex
from parsers.microsoft import NULL_CIP, connector_attribution, is_guid, microsoft_stamped_sender_ips, verdicts
from parsers.received import Hop, IPAddress, parse_ip, parse_received
from parsers.trust import (
    NON_GLOBAL,
    TrustPolicy,
    in_networks,
    is_microsoft_host,
    is_microsoft_internal_hop,
    is_microsoft_outbound,
    microsoft_internal,
)
from schemas import Evidence, ReceivedHop, Source

MAX_HOPS = 60
MAX_HINTS = 10
EXCHANGE_ONLINE = "exchange-online"


@dataclass(frozen=True, slots=True)
class StatedSource:
    """An origin IP stated by the reporter (ARF Source-IP, SpamCop, JMRP subject...)."""

    ip: IPAddress
    method: str
    detail: str


@dataclass(slots=True)
class Attribution:
    source: Source
    hops: list[ReceivedHop]
    evidence: list[Evidence] = field(default_factory=list)


@dataclass(slots=True)
class _Walk:
    hops: list[Hop]
    reasons: list[str | None]
    handoff: int | None
    microsoft_mailbox: bool
    relays: list[int] = field(default_factory=list)
    """Hops trusted as the recipient's own forwarding relays (`parsers.forwarding`)."""


def _walk(hops: list[Hop], trust: TrustPolicy, addressed: Callable[[], frozenset[str]]) -> _Walk:
    reasons: list[str | None] = []
    relays: list[int] = []
    microsoft_mailbox = False
    for index, hop in enumerate(hops):
        if hop.from_ip is not None and is_microsoft_internal_hop(hop):
            reasons.append("Microsoft-internal hop of the recipient's mailbox")
            microsoft_mailbox = True
            continue
        reason = trust.trust_reason(hop)
        if reason is None and index + 1 < len(hops):
            reason = recipient_relay(hop, hops[index + 1], addressed)
            if reason is not None:
                relays.append(index)
        if reason is None:
            reasons.append(None)
            if is_microsoft_host(hop.by_host):
                microsoft_mailbox = True
            return _Walk(hops, reasons, index, microsoft_mailbox, relays)
        reasons.append(reason)
    if relays:
        # Nothing untrusted below the relay: it was the last hop from outside after all (a provider's
        # own relays, or a chain whose lower hops say nothing); never trade a source for none.
        first = relays[0]
        return _Walk(hops, [*reasons[:first], None], first, microsoft_mailbox)
    return _Walk(hops, reasons, None, microsoft_mailbox, relays)


def _fallback_handoff(hops: list[Hop], reasons: list[str | None]) -> int | None:
    """When every hop looked internal, the newest public-looking but reserved address (test nets...)."""
    for index, hop in enumerate(hops):
        if reasons[index] != NON_GLOBAL:
            continue
        ip = hop.from_ip
        if ip is None or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified:
            continue
        return index
    return None


def attribute(
    headers: HeaderIndex,
    *,
    trust: TrustPolicy,
    defects: Defects,
    stated: StatedSource | None = None,
    dkim_domains: list[str] | None = None,
    addressed_to: Iterable[str | None] = (),
) -> Attribution:
    """`addressed_to`: domains the message is known to have been sent to besides its own headers' (the
    reporter's own domain)."""
    lines = headers.all("received")
    if len(lines) > MAX_HOPS:
        defects.add(f"{len(lines)} Received headers: only the newest {MAX_HOPS} were walked")
        lines = lines[:MAX_HOPS]
    hops = [parse_received(line) for line in lines]
    known: list[frozenset[str]] = []

    def addressed() -> frozenset[str]:
        # Computed at most once, and only when a hop may be a forwarding relay (few walks ask).
        if not known:
            known.append(addressed_domains(headers, addressed_to, dkim_domains or ()))
        return known[0]

    walk = _walk(hops, trust, addressed)
    evidence: list[Evidence] = []
    for index in walk.relays:
        relay = hops[index]
        name = relay.rdns or relay.from_host or str(relay.from_ip)
        evidence.append(
            Evidence(
                field="received.trusted",
                value=name[:255],
                method="recipient-forwarding-relay",
                detail=relay.raw[:300],
            )
        )
        defects.add(
            f"Received hop {index + 1} ({name[:80]}) trusted as the recipient's own forwarding relay: "
            "it received the message for a domain the message was addressed to and passed it on"
        )
    handoff_index = walk.handoff
    if handoff_index is None:
        handoff_index = _fallback_handoff(hops, walk.reasons)
        if handoff_index is not None:
            defects.add("no Received hop from a global address: used the newest non-private one")
    handoff_ip: IPAddress | None = None
    helo = rdns = None
    if handoff_index is not None:
        hop = hops[handoff_index]
        handoff_ip = hop.from_ip
        helo, rdns = hop.from_host, hop.rdns
        method = "received-walk" if walk.handoff is not None else "received-walk-reserved"
        evidence.append(
            Evidence(field="source.handoff_ip", value=str(handoff_ip), method=method, detail=hop.raw[:300])
        )
    elif walk.microsoft_mailbox or "x-forefront-antispam-report" in headers:
        stamped = microsoft_stamped_sender_ips(headers)
        for value, header in stamped:
            ip = parse_ip(value)
            if ip is not None:
                handoff_ip = ip
                evidence.append(
                    Evidence(
                        field="source.handoff_ip",
                        value=str(ip),
                        method="eop-stamped-sender-ip",
                        detail=header,
                    )
                )
                walk.microsoft_mailbox = True
                break

    if walk.microsoft_mailbox and handoff_ip is not None:
        _cross_check_eop(headers, handoff_ip, evidence, defects)

    source_ip: IPAddress | None = handoff_ip
    if stated is not None:
        source_ip = stated.ip
        evidence.append(
            Evidence(field="source.ip", value=str(stated.ip), method=stated.method, detail=stated.detail)
        )
        evidence.append(_cross_check_stated(stated.ip, hops, handoff_ip))
        if handoff_ip is None:
            handoff_ip = stated.ip
    elif handoff_ip is not None:
        evidence.append(Evidence(field="source.ip", value=str(handoff_ip), method="handoff-ip"))

    platform = tenant_id = tenant_domain = None
    if is_microsoft_outbound(handoff_ip) or (stated is not None and is_microsoft_outbound(stated.ip)):
        platform = EXCHANGE_ONLINE
        evidence.append(
            Evidence(
                field="source.platform",
                value=EXCHANGE_ONLINE,
                method="microsoft-outbound-range",
                detail=f"{handoff_ip or (stated.ip if stated else '')} is Exchange Online shared outbound",
            )
        )
        origin, tenant_id, tenant_domain = _exchange_online(
            headers,
            left_microsoft=not walk.microsoft_mailbox,
            evidence=evidence,
            dkim_domains=dkim_domains or [],
        )
        if origin is not None:
            source_ip = origin

    hints = _hints(hops, handoff_index)
    models = [
        ReceivedHop(
            from_host=h.from_host,
            from_ip=str(h.from_ip) if h.from_ip is not None else None,
            by_host=h.by_host,
            protocol=h.protocol,
            trusted=index < len(walk.reasons) and walk.reasons[index] is not None,
            trust_reason=walk.reasons[index] if index < len(walk.reasons) else None,
        )
        for index, h in enumerate(hops)
    ]
    source = Source(
        ip=str(source_ip) if source_ip is not None else None,
        handoff_ip=str(handoff_ip) if handoff_ip is not None else None,
        platform=platform,
        tenant_id=tenant_id,
        tenant_domain=tenant_domain,
        helo=helo,
        rdns=rdns,
        hints=hints,
    )
    return Attribution(source=source, hops=models, evidence=evidence)


def _hints(hops: list[Hop], handoff_index: int | None) -> list[str]:
    if handoff_index is None:
        return []
    out: list[str] = []
    for hop in hops[handoff_index + 1 :]:
        if hop.from_ip is not None and hop.from_ip.is_global:
            text = str(hop.from_ip)
            if text not in out:
                out.append(text)
        if len(out) >= MAX_HINTS:
            break
    return out


def _cross_check_stated(stated: IPAddress, hops: list[Hop], handoff: IPAddress | None) -> Evidence:
    if handoff is not None and stated == handoff:
        return Evidence(
            field="source.ip",
            value=str(stated),
            method="cross-check",
            detail="equals the Received handoff IP",
        )
    for index, hop in enumerate(hops):
        if hop.from_ip == stated:
            return Evidence(
                field="source.ip",
                value=str(stated),
                method="cross-check",
                detail=f"seen in Received hop {index + 1}",
            )
    return Evidence(
        field="source.ip",
        value=str(stated),
        method="cross-check",
        detail="not seen in the Received chain" + (f" (handoff there is {handoff})" if handoff else ""),
    )


def _cross_check_eop(
    headers: HeaderIndex, handoff: IPAddress, evidence: list[Evidence], defects: Defects
) -> None:
    for value, header in microsoft_stamped_sender_ips(headers):
        ip = parse_ip(value)
        if ip is None:
            continue
        if ip == handoff:
            evidence.append(
                Evidence(
                    field="source.handoff_ip",
                    value=str(ip),
                    method="eop-cross-check",
                    detail=f"{header} agrees",
                )
            )
        else:
            defects.add(f"{header} names {ip} but the Received boundary is {handoff}")


def _exchange_online(
    headers: HeaderIndex, *, left_microsoft: bool, evidence: list[Evidence], dkim_domains: list[str]
) -> tuple[IPAddress | None, str | None, str | None]:
    origin: IPAddress | None = None
    tenant_id: str | None = None
    tenant_domain: str | None = None

    connector = connector_attribution(headers)
    if connector is None and left_microsoft:
        entered = _entered_microsoft_from(headers)
        if entered is not None:
            return _forwarded_by_tenant(headers, entered, evidence), None, None
    if connector is not None:
        tenant_id = connector.tenant_id
        evidence.append(
            Evidence(
                field="source.tenant_id",
                value=tenant_id,
                method="exo-connector-header",
                detail=connector.raw[:300],
            )
        )
        if connector.ip is not None and connector.ip.is_global:
            origin = connector.ip
            evidence.append(
                Evidence(
                    field="source.ip",
                    value=str(origin),
                    method="exo-connector-header",
                    detail=connector.raw[:300],
                )
            )

    if tenant_id is None and left_microsoft:
        # Only on a copy that left Microsoft do these name the sender; inside Microsoft, the recipient.
        crosstenant = headers.get("x-ms-exchange-crosstenant-id")
        if is_guid(crosstenant):
            assert crosstenant is not None
            tenant_id = crosstenant.strip().lower()
            evidence.append(
                Evidence(
                    field="source.tenant_id", value=tenant_id, method="exo-crosstenant-id", detail=crosstenant
                )
            )
    if left_microsoft:
        org = headers.get("x-originatororg")
        if org:
            tenant_domain = org.strip().lower()[:255]
            evidence.append(
                Evidence(
                    field="source.tenant_domain", value=tenant_domain, method="exo-originatororg", detail=org
                )
            )

    for verdict in verdicts(headers):
        if verdict.direction != "OUT" or not verdict.cip:
            continue
        if verdict.cip == NULL_CIP:
            evidence.append(
                Evidence(
                    field="source.ip",
                    value=NULL_CIP,
                    method="exo-sender-verdict",
                    detail=f"{verdict.header}: CIP {NULL_CIP}, an authenticated mailbox of the tenant",
                )
            )
            break
        cip = parse_ip(verdict.cip)
        if cip is not None and cip.is_global and origin is None:
            origin = cip
            evidence.append(
                Evidence(
                    field="source.ip",
                    value=str(cip),
                    method="exo-sender-verdict",
                    detail=f"{verdict.header} CIP",
                )
            )
        break

    for domain in dkim_domains:
        if domain.endswith(".onmicrosoft.com"):
            if tenant_domain is None or not tenant_domain.endswith(".onmicrosoft.com"):
                tenant_domain = domain
            evidence.append(
                Evidence(
                    field="source.tenant_domain",
                    value=domain,
                    method="exo-onmicrosoft-dkim",
                    detail=f"d={domain}",
                )
            )
            break
    return origin, tenant_id, tenant_domain


def _entered_microsoft_from(headers: HeaderIndex) -> IPAddress | None:
    """The Internet sender of junk that a tenant received and forwarded out of Microsoft: the CIP of
    Microsoft's inbound verdict for that tenant (`X-Forefront-Antispam-Report: ...DIR:INB`), when it is
    outside Microsoft, no connector header names an origin and no sender-side verdict (`DIR:OUT`) says
    the tenant itself sent it."""
    found = verdicts(headers)
    if any(verdict.direction == "OUT" for verdict in found):
        return None
    for verdict in found:
        if verdict.header != "x-forefront-antispam-report" or verdict.direction != "INB" or not verdict.cip:
            continue
        cip = parse_ip(verdict.cip)
        if cip is not None and cip.is_global and not _is_microsoft(cip):
            return cip
    return None


def _is_microsoft(ip: IPAddress) -> bool:
    return is_microsoft_outbound(ip) or in_networks(ip, microsoft_internal())


def _forwarded_by_tenant(headers: HeaderIndex, sender: IPAddress, evidence: list[Evidence]) -> IPAddress:
    """A tenant that forwards is a victim, not a source: it is recorded as the forwarder only."""
    evidence.append(
        Evidence(
            field="source.ip",
            value=str(sender),
            method="exo-inbound-verdict",
            detail="X-Forefront-Antispam-Report CIP (DIR:INB): the message entered Microsoft from there",
        )
    )
    tenant = headers.get("x-ms-exchange-crosstenant-id")
    if is_guid(tenant):
        assert tenant is not None
        evidence.append(
            Evidence(
                field="forwarded_by.tenant_id",
                value=tenant.strip().lower(),
                method="exo-forwarding-tenant",
                detail="X-MS-Exchange-CrossTenant-Id of the tenant that received the message from the "
                "Internet and forwarded it out of Microsoft: a victim, not the source",
            )
        )
    org = headers.get("x-originatororg")
    if org:
        evidence.append(
            Evidence(
                field="forwarded_by.tenant_domain",
                value=org.strip().lower()[:255],
                method="exo-forwarding-tenant",
                detail="X-OriginatorOrg of the forwarding tenant",
            )
        )
    return sender


def network_of(ip: str | None) -> str | None:
    """The aggregation network of an IP: /24 for IPv4, /48 for IPv6."""
    addr = parse_ip(ip)
    if addr is None:
        return None
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
