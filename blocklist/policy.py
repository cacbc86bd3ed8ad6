"""The listing policy: when a source is listed, for how long, and what is never listed.

Defaults (each a setting, `abusepipe.toml` or `ABUSEPIPE_BLOCKLIST_*`):

- an IP or a tenant is listed once at least 3 distinct reporters reported junk from it within 24 hours,
  or at least 2 distinct spam traps caught it in that time; `not-spam` and `opt-out` never count;
- a /24 (IPv4) or /48 (IPv6) network once at least 4 of its IPs are listed;
- a listing expires 24 hours after its last evidence; each relisting within 30 days of the previous
  listing's end multiplies that by 4 (24 h, 4 d, 16 d), up to 30 days;
- domain kinds (`from_domain`, `dkim_domain`, `url_domain`, `mail_from_domain`) are off unless named in
  `blocklist_kinds`, and never list a shared domain (freemail, URL shorteners, big clouds: the built-in
  list in `blocklist/data/shared_domains.txt`);
- never listed: what the operator allows (`blocklist_allow`: CIDRs, domains, tenant GUIDs), private and
  loopback addresses, and the IPs of a shared platform (Exchange Online's outbound ranges): the tenant
  behind them is listed instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from importlib import resources

from abusepipe.errors import ConfigError
from parsers.microsoft import is_guid
from parsers.trust import is_microsoft_outbound, microsoft_outbound

DOMAIN_KINDS = ("from_domain", "mail_from_domain", "dkim_domain", "url_domain")
ADDRESS_KINDS = ("ip", "network")
LISTABLE = ("ip", "network", "tenant", *DOMAIN_KINDS)
_NEVER = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "0.0.0.0/8",
        "100.64.0.0/10",
        "224.0.0.0/4",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


@cache
def shared_domains() -> frozenset[str]:
    text = resources.files("blocklist").joinpath("data", "shared_domains.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _within(domain: str, names: frozenset[str]) -> bool:
    labels = domain.lower().rstrip(".").split(".")
    return any(".".join(labels[i:]) in names for i in range(len(labels)))


@dataclass(frozen=True, slots=True)
class ListingPolicy:
    kinds: tuple[str, ...] = ("ip", "network", "tenant")
    reporters: int = 3
    """Distinct junk reporters within `window` that list an IP or a tenant (or a domain, when on)."""
    traps: int = 2
    """Distinct spam traps within `window` that list it."""
    window: timedelta = timedelta(hours=24)
    network_ips: int = 4
    """Listed IPs of one /24 or /48 that list the network."""
    ttl: timedelta = timedelta(hours=24)
    relist_factor: int = 4
    relist_window: timedelta = timedelta(days=30)
    max_ttl: timedelta = timedelta(days=30)
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allow_domains: frozenset[str] = frozenset()
    allow_tenants: frozenset[str] = frozenset()
    extra_shared_domains: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_settings(
        cls,
        *,
        kinds: tuple[str, ...],
        reporters: int,
        traps: int,
        window_hours: float,
        network_ips: int,
        ttl_hours: float,
        relist_factor: int,
        relist_window_days: float,
        max_ttl_days: float,
        allow: tuple[str, ...],
    ) -> ListingPolicy:
        unknown = [kind for kind in kinds if kind not in LISTABLE]
        if unknown:
            raise ConfigError(
                f"blocklist_kinds: unknown kind {unknown[0]!r} (choose from {', '.join(LISTABLE)})"
            )
        networks, domains, tenants = [], set(), set()
        for text in allow:
            entry = text.strip().lower()
            if not entry:
                continue
            if is_guid(entry):
                tenants.add(entry)
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                domains.add(entry.rstrip("."))
        if min(reporters, traps, network_ips, relist_factor) < 1 or min(window_hours, ttl_hours) <= 0:
            raise ConfigError("blocklist thresholds, TTL and window must be positive")
        return cls(
            kinds=tuple(kinds),
            reporters=reporters,
            traps=traps,
            window=timedelta(hours=window_hours),
            network_ips=network_ips,
            ttl=timedelta(hours=ttl_hours),
            relist_factor=relist_factor,
            relist_window=timedelta(days=relist_window_days),
            max_ttl=timedelta(days=max_ttl_days),
            allow_networks=tuple(networks),
            allow_domains=frozenset(domains),
            allow_tenants=frozenset(tenants),
        )

    def never(self, kind: str, key: str) -> str | None:
        """Why `key` may never be listed by the policy, or None."""
        if kind in ADDRESS_KINDS:
            try:
                network = ipaddress.ip_network(key, strict=False)
            except ValueError:
                return "not an address"
            if any(network.version == n.version and network.subnet_of(n) for n in _NEVER):  # type: ignore[arg-type]
                return "a private or reserved address"
            if any(network.version == n.version and network.overlaps(n) for n in self.allow_networks):
                return "allowed by the operator"
            if kind == "ip" and is_microsoft_outbound(network.network_address):
                return "a shared platform's IP (Exchange Online): its tenant is listed instead"
            if kind == "network" and any(
                network.version == n.version and network.overlaps(n) for n in microsoft_outbound()
            ):
                return "holds a shared platform's IPs (Exchange Online): its tenants are listed instead"
            return None
        if kind == "tenant":
            return "allowed by the operator" if key.lower() in self.allow_tenants else None
        if _within(key, self.allow_domains):
            return "allowed by the operator"
        if _within(key, shared_domains() | self.extra_shared_domains):
            return "a shared domain (freemail, URL shortener, cloud)"
        return None

    def next_ttl(self, previous: timedelta | None) -> timedelta:
        """The TTL of a relisting within the relist window: the previous one times the factor, capped."""
        if previous is None:
            return self.ttl
        return min(self.max_ttl, max(self.ttl, previous * self.relist_factor))
