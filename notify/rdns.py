"""Forward-confirmed reverse DNS (FCrDNS): the PTR name of an address, and whether that name resolves
back to it. An unconfirmed name is the address owner's claim only; the console and `contact` say which."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

MAX_NAMES = 4
"""PTR names followed (an address may have several; a hostile zone may list hundreds)."""


@dataclass(frozen=True, slots=True)
class ReverseName:
    name: str | None
    confirmed: bool


def reverse_name(resolver: dns.resolver.Resolver, ip: str) -> ReverseName:
    address = ipaddress.ip_address(ip)
    try:
        answer = resolver.resolve(dns.reversename.from_address(str(address)), "PTR")
    except (dns.exception.DNSException, ValueError):
        return ReverseName(None, False)
    names = [str(record.target).rstrip(".").lower() for record in answer][:MAX_NAMES]
    if not names:
        return ReverseName(None, False)
    family = "A" if address.version == 4 else "AAAA"
    for name in names:
        try:
            forward = resolver.resolve(name, family)
        except (dns.exception.DNSException, ValueError):
            continue
        if any(ipaddress.ip_address(record.address) == address for record in forward):
            return ReverseName(name[:253], True)
    return ReverseName(names[0][:253], False)
