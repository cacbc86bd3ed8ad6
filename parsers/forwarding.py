"""The recipient's own forwarding hops: an alias at one domain (a university, a project, an employer)
forwarded by that domain's MX to the reporter's server.

The top `Received` lines then show the reporter's server receiving from the alias domain's MX, which
received from the real sender. That MX is an innocent relay of the recipient, not the source. A hop is
taken for one when the host that connects in it (its name as the trusted receiver recorded it, else its
HELO) and the host that received the hop below it share a registrable domain that the message was
addressed to: that host received the message for the recipient and passed it on to the next recipient
hop. The domains the message was addressed to come from the `for <...>` clauses, `Delivered-To`,
`X-Original-To`, `Envelope-To`, the junk's `To`/`Cc`, and the reporter's own domain.

Several of those are written by the sender, so the inference is kept narrow: never for a domain the
message claims to come from (`From`, `Sender`, `Return-Path`, DKIM `d=`: mail from a domain to the same
domain passes the sender's own relays, and junk spoofing a provider addresses it to itself), and the
caller undoes it when no untrusted hop is left below (it never trades a source for none).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from parsers.headers import HeaderIndex, domain_of, parse_address, split_address_list
from parsers.received import Hop
from parsers.urls import registrable_domain

_FOR = re.compile(r"\bfor\s+<?([^\s<>;@]+@[^\s<>;]+?)>?\s*(?:;|$|\()", re.IGNORECASE)
_ADDRESSED = ("delivered-to", "x-original-to", "envelope-to", "to", "cc")
MAX_ADDRESSES = 50


def addressed_domains(
    headers: HeaderIndex, extra: Iterable[str | None] = (), sender: Iterable[str | None] = ()
) -> frozenset[str]:
    """Registrable domains the message was addressed to, less those it claims to come from (`sender`:
    its DKIM signing domains; From, Sender and Return-Path are read here)."""
    hosts: list[str | None] = list(extra)
    for line in headers.all("received")[:60]:
        hosts.extend(domain_of(address) for address in _FOR.findall(line)[:2])
    for name in _ADDRESSED:
        for value in headers.all(name)[:5]:
            hosts.extend(_domains(value))
    claimed: list[str | None] = list(sender)
    for name in ("from", "sender", "return-path"):
        for value in headers.all(name)[:5]:
            claimed.extend(_domains(value))
    own = {d for host in claimed if host and (d := registrable_domain(host))}
    return frozenset(d for host in hosts if host and (d := registrable_domain(host)) and d not in own)


def _domains(value: str) -> list[str | None]:
    out: list[str | None] = []
    for item in split_address_list(value, MAX_ADDRESSES):
        parsed = parse_address(item, None)
        out.append(parsed.domain if parsed else None)
    return out


def recipient_relay(hop: Hop, below: Hop | None, addressed: Callable[[], frozenset[str]]) -> str | None:
    """Why `hop` is the recipient's own forwarding relay, or None. `below` is the hop under it (older);
    `addressed` gives `addressed_domains`, asked last: most hops fail the cheaper tests before it."""
    if below is None or not below.by_host:
        return None
    name = hop.rdns or hop.from_host
    if not name:
        return None
    domain = registrable_domain(name)
    if domain is None or registrable_domain(below.by_host) != domain or domain not in addressed():
        return None
    return (
        f"the recipient's forwarding relay: {name[:100]} received it for {domain} (the message was "
        "addressed there) and passed it on"
    )
