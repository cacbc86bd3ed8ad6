"""Listing keys as the store holds them: what an analyst types is checked and written the way ingest
writes offender keys, so that a manual listing and the evidence meet on the same key."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta

from abusepipe.errors import ConfigError
from blocklist.policy import DOMAIN_KINDS, LISTABLE
from parsers.microsoft import is_guid

_LABEL = re.compile(r"[^\s@/:\\\[\]<>\"',;]{1,63}")
MIN_PREFIX = {4: 8, 6: 16}
"""The widest network a listing may cover (a typo like /1 would block half the Internet)."""


def normalize(kind: str, text: str) -> str:
    """The key of `text` as a listing of `kind`, or ConfigError saying what is wrong with it."""
    if kind not in LISTABLE:
        raise ConfigError(f"unknown listing kind {kind!r}: choose one of {', '.join(LISTABLE)}")
    value = text.strip()
    if kind == "ip":
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            raise ConfigError(f"{text[:80]!r} is not an IP address") from None
    if kind == "network":
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigError(f"{text[:80]!r} is not a network (CIDR, e.g. 192.0.2.0/24)") from None
        if network.prefixlen < MIN_PREFIX[network.version]:
            raise ConfigError(f"{network} is wider than /{MIN_PREFIX[network.version]}: refusing to list it")
        return str(network)
    if kind == "tenant":
        if not is_guid(value):
            raise ConfigError(f"{text[:80]!r} is not a tenant id (a GUID)")
        return value.lower()
    assert kind in DOMAIN_KINDS
    domain = value.lower().rstrip(".")
    labels = domain.split(".")
    if not domain or len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(f"{text[:80]!r} is not a domain name")
    return domain


_DURATION = re.compile(r"\s*(\d{1,7})\s*([smhdw])\s*", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_ttl(text: str) -> timedelta:
    """`90m`, `12h`, `7d`, `2w` (or seconds, `30s`) as a timedelta."""
    match = _DURATION.fullmatch(text or "")
    if match is None:
        raise ConfigError(f"--ttl {text!r}: give a number and a unit, such as 12h, 7d or 2w")
    seconds = int(match.group(1)) * _UNIT[match.group(2).lower()]
    if seconds <= 0:
        raise ConfigError(f"--ttl {text!r}: must be longer than nothing")
    if seconds > 10 * 365 * 86400:
        raise ConfigError(f"--ttl {text!r}: longer than ten years; leave --ttl out for no expiry")
    return timedelta(seconds=seconds)
