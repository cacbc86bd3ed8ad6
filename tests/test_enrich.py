"""Offline enrichment: the source's AS and country from MaxMind-format databases (written by the tests in
the real free databases' shapes, read by the real reader), in `parse`, in `ingest` on SQLite and
PostgreSQL, the `asn` offender kind and `offenders --country`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from abusepipe.errors import ConfigError
from ingest.enrich import Enrichment, SourceEnricher, SourceFacts
from ingest.runner import ParseOptions, to_stored
from ingest.sources import RawMessage
from sinks.offenders import offender_keys
from tests.conftest import ROOT
from tests.console import CMD, cli
from tests.geodb import asn_db, country_db, ipinfo_lite_db
from tests.mail import arf
from tests.test_blocklist import original


@pytest.fixture
def databases(tmp_path: Path) -> dict[str, str]:
    return {
        "ABUSEPIPE_ASN_DB": str(asn_db(tmp_path / "asn.mmdb")),
        "ABUSEPIPE_COUNTRY_DB": str(country_db(tmp_path / "country.mmdb")),
    }


def report_about(ip: str, reporter: str = "fbl@isp.example") -> bytes:
    raw = arf("abuse", original(ip), fields=[("Source-IP", ip)])
    return raw.replace(b"fbl@isp.example", reporter.encode())


def test_each_database_shape_is_read(tmp_path: Path) -> None:
    both = SourceEnricher(Enrichment(asn_db(tmp_path / "a.mmdb"), country_db(tmp_path / "c.mmdb")))
    assert both.facts("45.33.7.9") == SourceFacts(64500, "Example Hosting AS", "DE")
    assert both.facts("45.33.8.1") == SourceFacts(64500, "Example Hosting AS", "NL")
    assert both.facts("2a01:7e00::5") == SourceFacts(64501, "Example Hosting v6", "GB")
    assert both.facts("45.34.0.1") == SourceFacts()  # in neither
    assert both.facts("198.18.0.1") == SourceFacts()  # not a global address: never looked up
    assert both.facts("not an ip") == SourceFacts()
    ipinfo = ipinfo_lite_db(tmp_path / "ipinfo.mmdb")
    one_file = SourceEnricher(Enrichment(ipinfo, ipinfo))
    assert one_file.facts("45.33.9.1") == SourceFacts(13335, "Cloudflare, Inc.", "US")


def test_a_wrong_database_is_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(
        ConfigError, match=r"ABUSEPIPE_ASN_DB .*garbage\.mmdb: not a readable MaxMind database"
    ):
        SourceEnricher(Enrichment(asn_db=garbage))
    with pytest.raises(ConfigError, match="ABUSEPIPE_COUNTRY_DB"):
        SourceEnricher(Enrichment(country_db=tmp_path / "missing.mmdb"))
    done = cli(
        f"sqlite:///{tmp_path / 's.db'}",
        "ingest",
        "-",
        stdin=report_about("45.33.7.9"),
        env={"ABUSEPIPE_ASN_DB": str(garbage)},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "ABUSEPIPE_ASN_DB" in done.stderr


def test_ingest_enriches_and_documents_without_it_are_unchanged(databases: dict[str, str]) -> None:
    raw = RawMessage(report_about("45.33.7.9"), "t")
    now = datetime.now(UTC)
    plain = to_stored(raw, ParseOptions(), now).reports[0]
    options = ParseOptions(
        enrichment=Enrichment(Path(databases["ABUSEPIPE_ASN_DB"]), Path(databases["ABUSEPIPE_COUNTRY_DB"]))
    )
    enriched = to_stored(raw, options, now).reports[0]
    assert (enriched.source.asn, enriched.source.as_org, enriched.source.country) == (
        64500,
        "Example Hosting AS",
        "DE",
    )
    document = json.loads(plain.model_dump_json())
    assert not {"asn", "as_org", "country"} & set(document["source"])  # schema version 1 as it always was
    assert json.loads(enriched.model_dump_json())["source"]["asn"] == 64500
    assert ("asn", "AS64500") in offender_keys(enriched) and not any(
        k == "asn" for k, _ in offender_keys(plain)
    )
    assert enriched.report_id == plain.report_id


def test_parse_prints_the_enriched_source(databases: dict[str, str], tmp_path: Path) -> None:
    sample = tmp_path / "r.eml"
    sample.write_bytes(report_about("2a01:7e00::9"))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
    done = subprocess.run(
        [*CMD, "parse", str(sample)],
        env={**environment, **databases, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    source = json.loads(done.stdout)["source"]
    assert (source["ip"], source["asn"], source["country"]) == ("2a01:7e00::9", 64501, "GB")


def test_offenders_by_asn_and_by_country(
    database_url: str, databases: dict[str, str], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    sources = {"45.33.7.9": 3, "45.33.7.10": 1, "45.33.8.1": 2, "45.34.1.1": 2}  # DE, DE, NL, unknown
    n = 0
    for ip, count in sources.items():
        for i in range(count):
            (spool / f"{n}.eml").write_bytes(report_about(ip, f"fbl{i}@isp{i}.example"))
            n += 1
    done = cli(database_url, "ingest", "--quiet", str(spool), env=databases)
    assert done.returncode == 0, done.stderr

    def offenders(*args: str) -> list[dict[str, object]]:
        listed = cli(database_url, "offenders", *args, "--format", "json")
        assert listed.returncode == 0, listed.stderr
        return json.loads(listed.stdout)  # type: ignore[no-any-return]

    by_asn = offenders("--by", "asn")
    assert [(row["key"], row["reports"]) for row in by_asn] == [("AS64500", 6)]
    german = offenders("--by", "ip", "--country", "de", "--since", "30d")
    assert [(row["key"], row["reports"], row["reporters"]) for row in german] == [
        ("45.33.7.9", 3, 3),
        ("45.33.7.10", 1, 1),
    ]
    assert [row["key"] for row in offenders("--by", "ip", "--country", "NL")] == ["45.33.8.1"]
    assert offenders("--by", "ip", "--country", "FR") == []
    bad = cli(database_url, "offenders", "--by", "ip", "--country", "Germany")
    assert bad.returncode == 2 and "ISO 3166-1 alpha-2" in bad.stderr and "Traceback" not in bad.stderr
    detail = cli(database_url, "offender", "asn", "64500", "--format", "json")
    assert detail.returncode == 0, detail.stderr
    shown = json.loads(detail.stdout)
    assert (shown["key"], shown["reports"]) == ("AS64500", 6)
    assert {row["key"] for row in shown["related"]["ip"]} == {"45.33.7.9", "45.33.7.10", "45.33.8.1"}


def real_databases() -> Path:
    """ip-location-db's data from the npm registry (scripts/geodata.py; cached in .cache/geodata)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "geodata.py")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-data test: scripts/geodata.py failed: {done.stderr.strip()}")
        pytest.skip(f"no real IP data: {done.stderr.strip()[-200:]}")
    return Path(done.stdout.strip())


@pytest.mark.integration
def test_real_data_names_known_networks(tmp_path: Path) -> None:
    data = real_databases()
    enricher = SourceEnricher(Enrichment(data / "asn.mmdb", data / "geo-whois-asn-country.mmdb"))
    known = {
        "8.8.8.8": (15169, "US"),  # Google Public DNS
        "1.1.1.1": (13335, "AU"),  # Cloudflare's resolver, registered with APNIC
        "193.0.6.139": (3333, "NL"),  # RIPE NCC's own network
    }
    for ip, (asn, country) in known.items():
        facts = enricher.facts(ip)
        assert (facts.asn, facts.country) == (asn, country), (ip, facts)
    assert enricher.facts("2001:4860:4860::8888").country == "US"  # IPv6: the country database has it
    env = {
        "ABUSEPIPE_ASN_DB": str(data / "asn.mmdb"),
        "ABUSEPIPE_COUNTRY_DB": str(data / "geo-whois-asn-country.mmdb"),
    }
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    done = cli(database, "ingest", "-", stdin=report_about("8.8.8.8"), env=env)
    assert done.returncode == 0, done.stderr
    listed = cli(database, "offenders", "--by", "asn", "--format", "json")
    assert [row["key"] for row in json.loads(listed.stdout)] == ["AS15169"]
