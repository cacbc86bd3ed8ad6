"""The abuse contact of a source address, and where it came from: the operator's overrides first, then
Abusix's abuse-contact zone over DNS, then RDAP; with the address's forward-confirmed reverse DNS.
Answers are cached in the store (`contacts`) for `ttl`, an address without a contact for a day, one
whose sources failed for an hour. Never on the ingest path: `abusepipe contact` and onward reporting ask.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dns.exception
import dns.resolver
import dns.reversename
from sqlalchemy import Connection, delete, insert, select

from abusepipe.errors import ConfigError
from notify import rdap
from notify.rdns import ReverseName, reverse_name
from sinks import models as m
from sinks.queries import utc

C = m.contacts
NO_CONTACT_TTL = timedelta(days=1)
FAILED_TTL = timedelta(hours=1)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


PLACEHOLDER_LOCALS = frozenset({"none", "null", "nobody", "noreply", "no-reply", "donotreply", "unknown"})
PLACEHOLDER_DOMAINS = frozenset({"example.com", "example.net", "example.org", "localhost", "none", "invalid"})
_ADDRESS = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
)


def usable(address: str | None) -> str | None:
    """An abuse address a registry or zone gave, if it is one: registries hold placeholders
    (`none@none`, `abuse@example.com`, `noreply@...`) and free text."""
    if not address:
        return None
    candidate = address.strip().strip("<>").lower()
    if not _ADDRESS.fullmatch(candidate):
        return None
    local, _, domain = candidate.rpartition("@")
    if local in PLACEHOLDER_LOCALS or domain in PLACEHOLDER_DOMAINS or "." not in domain:
        return None
    if domain.endswith((".invalid", ".localhost", ".local")):
        return None
    return candidate


@dataclass(frozen=True, slots=True)
class Contact:
    ip: str
    contact: str | None
    origin: str
    """override, abusix, rdap or none."""
    detail: str | None
    rdns: str | None
    rdns_confirmed: bool
    fetched_at: datetime
    expires_at: datetime | None
    error: str | None = None
    cached: bool = False

    def document(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "contact": self.contact,
            "origin": self.origin,
            "detail": self.detail,
            "rdns": self.rdns,
            "rdns_confirmed": self.rdns_confirmed,
            "fetched_at": self.fetched_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "error": self.error,
            "cached": self.cached,
        }


@dataclass(frozen=True, slots=True)
class ContactSources:
    overrides: tuple[tuple[Network, str], ...] = ()
    abusix_zone: str = "abuse-contacts.abusix.zone"
    """Empty: not asked."""
    rdap_url: str = "https://rdap.org/"
    """Empty: not asked."""
    dns_server: tuple[str, int] | None = None
    """None: the system's resolver."""
    ttl: timedelta = timedelta(days=7)
    dns_timeout: float = 5.0

    @classmethod
    def parse_overrides(cls, overrides: Mapping[str, str]) -> tuple[tuple[Network, str], ...]:
        parsed = []
        for cidr, address in overrides.items():
            try:
                network = ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"contact_overrides: {cidr[:60]!r} is not a CIDR") from None
            if "@" not in address or any(c in address for c in "\r\n <>,;"):
                raise ConfigError(f"contact_overrides: {address[:60]!r} is not an e-mail address")
            parsed.append((network, address.strip().lower()))
        # the most specific first
        return tuple(sorted(parsed, key=lambda item: -item[0].prefixlen))


@dataclass
class ContactFinder:
    sources: ContactSources
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def resolver(self) -> dns.resolver.Resolver:
        if self.sources.dns_server is None:
            resolver = dns.resolver.Resolver()
        else:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [self.sources.dns_server[0]]
            resolver.port = self.sources.dns_server[1]
        resolver.lifetime = self.sources.dns_timeout
        return resolver

    def find(self, connection: Connection, ip: str, *, refresh: bool = False) -> Contact:
        try:
            address = ipaddress.ip_address(ip.strip().strip("[]"))
        except ValueError:
            raise ConfigError(f"{ip[:60]!r} is not an IP address") from None
        ip = str(address)
        now = self.clock()
        override = next((mail for net, mail in self.sources.overrides if address in net), None)
        cached = None if refresh else self._cached(connection, ip, now)
        if cached is not None and override is None:
            return cached
        resolver = self.resolver()
        if cached is not None:  # an override, and what was looked up about the address still holds
            name = ReverseName(cached.rdns, cached.rdns_confirmed)
        else:
            name = reverse_name(resolver, ip)
        if override is not None:
            return Contact(
                ip, override, "override", "contact_overrides", name.name, name.confirmed, now, None
            )
        errors: list[str] = []
        contact, origin, detail = self._abusix(resolver, address, errors)
        if contact is None and self.sources.rdap_url:
            try:
                answer = rdap.lookup(self.sources.rdap_url, ip)
            except rdap.RdapError as exc:
                errors.append(str(exc))
            else:
                if usable(answer.contact) is not None:
                    contact, origin = usable(answer.contact), "rdap"
                detail = f"{answer.url} ({answer.network})" if answer.network else answer.url
        if contact is None:
            origin = "none"
        ttl = self.sources.ttl if contact else (FAILED_TTL if errors else NO_CONTACT_TTL)
        found = Contact(
            ip,
            contact,
            origin,
            detail,
            name.name,
            name.confirmed,
            now,
            now + ttl,
            "; ".join(errors)[:500] or None,
        )
        self._store(connection, found)
        return found

    def _abusix(
        self,
        resolver: dns.resolver.Resolver,
        address: ipaddress.IPv4Address | ipaddress.IPv6Address,
        errors: list[str],
    ) -> tuple[str | None, str, str | None]:
        zone = self.sources.abusix_zone.strip(".")
        if not zone:
            return None, "none", None
        name = dns.reversename.from_address(str(address)).relativize(
            dns.reversename.ipv4_reverse_domain
            if address.version == 4
            else dns.reversename.ipv6_reverse_domain
        )
        query = f"{name}.{zone}"
        try:
            answer = resolver.resolve(query, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None, "none", None
        except dns.exception.DNSException as exc:
            errors.append(f"DNS {query}: {type(exc).__name__}")
            return None, "none", None
        for record in answer:
            text = b"".join(record.strings).decode("ascii", "replace").strip()
            for candidate in text.replace(",", " ").split():
                found = usable(candidate)
                if found is not None:
                    return found, "abusix", query
        return None, "none", query

    def _cached(self, connection: Connection, ip: str, now: datetime) -> Contact | None:
        row = connection.execute(select(C).where(C.c.ip == ip)).first()
        if row is None or utc(row.expires_at) <= now:
            return None
        return Contact(
            row.ip,
            row.contact,
            row.origin,
            row.detail,
            row.rdns,
            bool(row.rdns_confirmed),
            utc(row.fetched_at),
            utc(row.expires_at),
            row.error,
            cached=True,
        )

    def _store(self, connection: Connection, found: Contact) -> None:
        connection.execute(delete(C).where(C.c.ip == found.ip))
        connection.execute(
            insert(C).values(
                ip=found.ip,
                contact=found.contact,
                origin=found.origin,
                detail=found.detail,
                rdns=found.rdns,
                rdns_confirmed=found.rdns_confirmed,
                error=found.error,
                fetched_at=found.fetched_at,
                expires_at=found.expires_at,
            )
        )
