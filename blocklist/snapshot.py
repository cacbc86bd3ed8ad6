"""The listings the policy server answers from: IPs and networks in force, held in memory.

A lookup is a dict probe for the address and one per prefix length in use (the /24 and /48 of the
policy's escalation, and whatever manual networks list): no database on the SMTP path. The snapshot is
loaded whole at start and then follows the changes (`updated_at`) the store records; expiry is checked at
lookup, so a listing lapses on time between refreshes.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from blocklist.export import _hex6
from sinks.queries import utc

FOREVER = math.inf
_MAX = {4: (1 << 32) - 1, 6: (1 << 128) - 1}


def parse_address(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address as Postfix sends `client_address`; IPv4-mapped IPv6 as IPv4."""
    try:
        if ":" not in text:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0]), "big")
    except OSError:
        return None
    if value >> 32 == 0xFFFF:
        return 4, value & 0xFFFFFFFF
    return 6, value


@dataclass(frozen=True, slots=True)
class Row:
    """A listing as the snapshot needs it: in force (`listed`, with `expires_at` later than now) or not."""

    kind: str
    key: str
    listed: bool
    expires_at: datetime | None

    @property
    def expiry(self) -> float:
        return FOREVER if self.expires_at is None else utc(self.expires_at).timestamp()


@dataclass(slots=True)
class ListingSnapshot:
    ips: dict[tuple[int, int], float] = field(default_factory=dict)
    """(version, address) → expiry (a Unix time; inf for none)."""
    networks: dict[int, dict[int, dict[int, float]]] = field(default_factory=lambda: {4: {}, 6: {}})
    """version → prefix length → network address → expiry."""
    _prefixes: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=lambda: {4: (), 6: ()})

    @classmethod
    def of(cls, rows: Iterable[Row]) -> ListingSnapshot:
        snapshot = cls()
        snapshot.apply(rows)
        return snapshot

    def __len__(self) -> int:
        return len(self.ips) + sum(len(n) for by_len in self.networks.values() for n in by_len.values())

    def apply(self, rows: Iterable[Row]) -> None:
        """Follow changes: a row in force is (re)placed, any other removed."""
        for row in rows:
            if row.kind == "ip":
                address = parse_address(row.key)
                if address is None:
                    continue
                if row.listed:
                    self.ips[address] = row.expiry
                else:
                    self.ips.pop(address, None)
            elif row.kind == "network":
                try:
                    network = ipaddress.ip_network(row.key, strict=False)
                except ValueError:
                    continue
                family: int = network.version
                prefix, base = network.prefixlen, int(network.network_address)
                if family == 6 and base >> 32 == 0xFFFF and prefix >= 96:  # IPv4-mapped: as IPv4
                    family, prefix, base = 4, prefix - 96, base & 0xFFFFFFFF
                table = self.networks[family].setdefault(prefix, {})
                if row.listed:
                    table[base] = row.expiry
                else:
                    table.pop(base, None)
        for version, by_len in self.networks.items():
            for prefix in [p for p, table in by_len.items() if not table]:
                del by_len[prefix]
            bits = 32 if version == 4 else 128
            self._prefixes[version] = tuple(
                (prefix, _MAX[version] ^ ((1 << (bits - prefix)) - 1))
                for prefix in sorted(by_len, reverse=True)
            )

    def listed(self, address: tuple[int, int], now: float) -> bool:
        expiry = self.ips.get(address)
        if expiry is not None and expiry > now:
            return True
        version, value = address
        by_len = self.networks[version]
        for prefix, mask in self._prefixes[version]:
            expiry = by_len[prefix].get(value & mask)
            if expiry is not None and expiry > now:
                return True
        return False


def address_text(address: tuple[int, int]) -> str:
    version, value = address
    if version == 4:
        return str(ipaddress.IPv4Address(value))
    return _hex6(ipaddress.IPv6Address(value))
