"""Offline enrichment of a report's source: its autonomous system and country, from MaxMind-format
databases on local disk (DB-IP Lite, IPinfo Lite, ip-location-db, GeoLite2 — whichever the operator's
licence allows), read with `maxminddb`. Done where a report is made (parse and ingest, in the parser
workers), never in the pure parsers: it is I/O on files the settings name.

The databases' record shapes differ; each is read as it is documented:
- ASN: `autonomous_system_number` / `autonomous_system_organization` (GeoLite2-ASN, DB-IP ASN Lite,
  ip-location-db), or `asn` ("AS13335") / `as_name` (IPinfo Lite);
- country: `country.iso_code` (GeoLite2-Country, DB-IP Country Lite), `country_code` (ip-location-db,
  IPinfo Lite).
One file may hold both (IPinfo Lite): name it as both settings.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from abusepipe.errors import ConfigError
from schemas import AbuseReport

CACHE = 65_536
"""Sources remembered per process: a flood's few IPs are looked up once."""


@dataclass(frozen=True, slots=True)
class Enrichment:
    """Where the databases are (picklable: it travels to the parser workers, which open them)."""

    asn_db: Path | None = None
    country_db: Path | None = None

    def __bool__(self) -> bool:
        return self.asn_db is not None or self.country_db is not None


@dataclass(frozen=True, slots=True)
class SourceFacts:
    asn: int | None = None
    as_org: str | None = None
    country: str | None = None


def _asn(record: dict[str, Any]) -> tuple[int | None, str | None]:
    number = record.get("autonomous_system_number", record.get("asn"))
    organisation = record.get("autonomous_system_organization", record.get("as_name"))
    if isinstance(number, str):
        digits = number.upper().removeprefix("AS")
        number = int(digits) if digits.isdigit() else None
    if not isinstance(number, int) or not 0 < number < 2**32:
        number = None
    return number, organisation[:200] if isinstance(organisation, str) and organisation else None


def _country(record: dict[str, Any]) -> str | None:
    country = record.get("country")
    code = country.get("iso_code") if isinstance(country, dict) else record.get("country_code")
    if isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalpha():
        return code.upper()
    return None


class SourceEnricher:
    def __init__(self, enrichment: Enrichment) -> None:
        import maxminddb  # noqa: PLC0415 (only when enrichment is configured)

        def open_database(path: Path | None, setting: str) -> Any:
            if path is None:
                return None
            try:
                return maxminddb.open_database(str(path), maxminddb.MODE_MMAP)
            except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                raise ConfigError(f"{setting} {path}: not a readable MaxMind database ({exc})") from exc

        self._asn = open_database(enrichment.asn_db, "ABUSEPIPE_ASN_DB")
        self._country = open_database(enrichment.country_db, "ABUSEPIPE_COUNTRY_DB")
        self.facts = lru_cache(maxsize=CACHE)(self._facts)

    def _record(self, reader: Any, ip: str) -> dict[str, Any]:
        if reader is None:
            return {}
        try:
            record = reader.get(ip)
        except ValueError:  # an IPv6 address asked of an IPv4-only database, or not an address
            return {}
        return record if isinstance(record, dict) else {}

    def _facts(self, ip: str) -> SourceFacts:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return SourceFacts()
        if not address.is_global:
            return SourceFacts()
        asn, organisation = _asn(self._record(self._asn, ip))
        return SourceFacts(asn, organisation, _country(self._record(self._country, ip)))

    def enrich(self, report: AbuseReport) -> AbuseReport:
        if report.source.ip is None:
            return report
        facts = self.facts(report.source.ip)
        if facts == SourceFacts():
            return report
        source = report.source.model_copy(
            update={"asn": facts.asn, "as_org": facts.as_org, "country": facts.country}
        )
        return report.model_copy(update={"source": source})


_open: dict[Enrichment, SourceEnricher] = {}


def enricher_for(enrichment: Enrichment) -> SourceEnricher:
    """One enricher per process and configuration (each parser worker opens the files once)."""
    enricher = _open.get(enrichment)
    if enricher is None:
        enricher = _open[enrichment] = SourceEnricher(enrichment)
    return enricher
