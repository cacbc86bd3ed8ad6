"""Which `Received` hops are inside the recipient's network (trusted) and which IP ranges are Microsoft's."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from parsers.received import Hop, IPAddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
NON_GLOBAL = "non-global address"


def load_networks(name: str) -> tuple[Network, ...]:
    """Read a CIDR table shipped in `parsers/data`."""
    text = resources.files("parsers").joinpath("data", name).read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        cidr = line.split("#", 1)[0].strip()
        if cidr:
            out.append(ipaddress.ip_network(cidr))
    return tuple(out)


class NetworkSet:
    """Networks that addresses are tested against by integer masks: `address in network` of `ipaddress`
    costs a microsecond or more per network, and every Received hop is tested against Microsoft's."""

    __slots__ = ("_v4", "_v6", "networks")

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        self._v4 = _masks(self.networks, 4)
        self._v6 = _masks(self.networks, 6)

    def __contains__(self, ip: IPAddress) -> bool:
        value = int(ip)
        for network, mask in self._v4 if isinstance(ip, ipaddress.IPv4Address) else self._v6:
            if value & mask == network:
                return True
        return False

    def __iter__(self) -> Iterator[Network]:
        return iter(self.networks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetworkSet) and other.networks == self.networks

    def __hash__(self) -> int:
        return hash(self.networks)


def _masks(networks: tuple[Network, ...], version: int) -> tuple[tuple[int, int], ...]:
    return tuple((int(n.network_address), int(n.netmask)) for n in networks if n.version == version)


@cache
def microsoft_outbound() -> NetworkSet:
    return NetworkSet(load_networks("microsoft_outbound.txt"))


@cache
def microsoft_internal() -> NetworkSet:
    return NetworkSet(load_networks("microsoft_internal.txt"))


def in_networks(ip: IPAddress | None, networks: NetworkSet) -> bool:
    return ip is not None and ip in networks


def is_microsoft_outbound(ip: IPAddress | None) -> bool:
    return in_networks(ip, microsoft_outbound())


_MS_INTERNAL_HOST = re.compile(
    r"\.(?:prod\.outlook\.com|outlook\.office365\.com|prod\.protection\.outlook\.com|"
    r"prod\.exchangelabs\.com)$",
    re.IGNORECASE,
)
# The EOP front end that accepts mail from the Internet for a Microsoft-hosted mailbox.
_EOP_FRONT_END = re.compile(
    r"(?:\.mail\.protection\.outlook\.com|FT\d+\.eop-[a-z0-9-]+\.prod\.protection\.outlook\.com|"
    r"\.mail\.eo\.outlook\.com)$",
    re.IGNORECASE,
)


def is_microsoft_host(host: str | None) -> bool:
    return bool(host and (_MS_INTERNAL_HOST.search(host) or _EOP_FRONT_END.search(host)))


def is_eop_front_end(host: str | None) -> bool:
    return bool(host and _EOP_FRONT_END.search(host))


def _is_external(ip: IPAddress | None) -> bool:
    if ip is None or not ip.is_global:
        return False
    return not in_networks(ip, microsoft_internal()) or is_microsoft_outbound(ip)


def is_microsoft_internal_hop(hop: Hop) -> bool:
    """A hop between Exchange Online servers of the recipient's own mailbox."""
    if not is_microsoft_host(hop.by_host):
        return False
    if is_eop_front_end(hop.by_host) and _is_external(hop.from_ip):
        return False  # the EOP front end accepting from outside Microsoft's internal links: the boundary
    if hop.protocol and hop.protocol.lower() in ("mapi", "https"):
        return True
    if hop.via and "frontend transport" in hop.via.lower():
        return True
    if hop.from_ip is None:
        return is_microsoft_host(hop.from_host)
    if not hop.from_ip.is_global:
        return True
    # 2a01:111::/32 holds both internal links and the shared outbound ranges: outbound is a boundary.
    return in_networks(hop.from_ip, microsoft_internal()) and not is_microsoft_outbound(hop.from_ip)


@dataclass(frozen=True)
class TrustPolicy:
    """What counts as the recipient's own network when walking `Received` headers."""

    trusted_networks: NetworkSet = field(default_factory=lambda: NetworkSet(()))

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> TrustPolicy:
        """Raises ValueError naming the bad CIDR."""
        nets = []
        for cidr in cidrs:
            try:
                nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"not a network: {cidr!r}") from exc
        return cls(NetworkSet(nets))

    def trust_reason(self, hop: Hop) -> str | None:
        """Why the hop is inside the recipient's network, or None when it is not."""
        ip = hop.from_ip
        if ip is None:
            return "no connecting IP (local delivery)"
        if not ip.is_global:
            return NON_GLOBAL
        if hop.authenticated:
            return f"authenticated submission (with {hop.protocol})"
        if in_networks(ip, self.trusted_networks):
            return "operator-trusted network"
        return None
