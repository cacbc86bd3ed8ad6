"""MaxMind-format databases for the tests, written with mmdb-writer (MIT) in the record shapes the real
free databases use, and read by the real `maxminddb` reader. No real database ships here: their data is
licensed (CC BY 4.0, CC BY-SA) and changes monthly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

ASN_RANGES = {
    "45.33.0.0/16": (64500, "Example Hosting AS"),
    "2a01:7e00::/32": (64501, "Example Hosting v6"),
    "198.18.0.0/15": (64502, "Benchmarking (not global)"),
}
COUNTRY_RANGES = {"45.33.7.0/24": "DE", "45.33.8.0/24": "NL", "2a01:7e00::/32": "GB"}


def write(path: Path, records: dict[str, dict[str, Any]], database_type: str) -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type)
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


def asn_db(path: Path) -> Path:
    """GeoLite2-ASN / DB-IP ASN Lite shape."""
    records = {
        network: {"autonomous_system_number": number, "autonomous_system_organization": name}
        for network, (number, name) in ASN_RANGES.items()
    }
    return write(path, records, "DBIP-ASN-Lite (compat=GeoLite2-ASN)")


def country_db(path: Path) -> Path:
    """GeoLite2-Country / DB-IP Country Lite shape."""
    records = {network: {"country": {"iso_code": code}} for network, code in COUNTRY_RANGES.items()}
    return write(path, records, "DBIP-Country-Lite")


def ipinfo_lite_db(path: Path) -> Path:
    """IPinfo Lite's shape: ASN and country in one record."""
    records = {"45.33.9.0/24": {"asn": "AS13335", "as_name": "Cloudflare, Inc.", "country_code": "US"}}
    return write(path, records, "ipinfo lite.mmdb")
