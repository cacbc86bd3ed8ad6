"""What offline enrichment (ABUSEPIPE_ASN_DB, ABUSEPIPE_COUNTRY_DB) costs on ingest.

    python benchmarks/enrich.py [--reports 20000] [--rounds 3]

Databases: real ones when the npm registry can be reached (scripts/geodata.py: ip-location-db's country
database and its 412,000 IPv4 ASN ranges), else an ASN and a country database covering every public IPv4
/14 written here, so that every lookup finds a record.

1. parse: the real-report corpus (tests/samples, and ../shared/corpus and corpus-bulk when beside the
   checkout) parsed in one process, with and without enrichment, alternately: messages/s and the cost.
2. ingest: `abusepipe ingest` of an mbox of --reports reports (1,000 source IPs) into a fresh SQLite
   store, with and without, alternately --rounds times: the median wall time of each and the ratio
   (target: at most 10 % slower).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmdb_writer import MMDBWriter  # noqa: E402
from netaddr import IPSet  # noqa: E402

from ingest.enrich import Enrichment  # noqa: E402
from ingest.runner import ParseOptions, to_stored  # noqa: E402
from ingest.sources import RawMessage  # noqa: E402
from tests.mail import many_reports  # noqa: E402

CLI = [sys.executable, "-m", "abusepipe.cli"]
COUNTRIES = ["DE", "US", "NL", "FR", "GB", "RU", "CN", "BR", "IN", "JP"]


def databases(directory: Path) -> tuple[Path, Path]:
    asn = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="bench-ASN")
    country = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="bench-Country")
    for first in range(1, 224):
        for second in range(0, 256, 4):
            network = IPSet([f"{first}.{second}.0.0/14"])
            number = first * 1000 + second
            asn.insert_network(
                network,
                {"autonomous_system_number": number, "autonomous_system_organization": f"AS {number}"},
            )
            country.insert_network(network, {"country": {"iso_code": COUNTRIES[number % len(COUNTRIES)]}})
    asn_path, country_path = directory / "asn.mmdb", directory / "country.mmdb"
    asn.to_db_file(str(asn_path))
    country.to_db_file(str(country_path))
    return asn_path, country_path


def corpus() -> list[bytes]:
    paths = sorted((ROOT / "tests" / "samples").rglob("*.eml"))
    for extra in ("corpus", "corpus-bulk"):
        directory = ROOT.parent / "shared" / extra
        if directory.is_dir():
            paths += sorted(directory.rglob("*.eml"))
    return [path.read_bytes() for path in paths]


def parse_rate(messages: list[bytes], options: ParseOptions) -> float:
    now = datetime.now(UTC)
    began = time.perf_counter()
    for data in messages:
        to_stored(RawMessage(data, "bench"), options, now)
    return len(messages) / (time.perf_counter() - began)


def ingest_seconds(mbox: Path, environment: dict[str, str], work: Path, label: str) -> float:
    store = work / f"{label}-{time.monotonic_ns()}.sqlite3"
    began = time.perf_counter()
    done = subprocess.run(
        [*CLI, "ingest", "--quiet", "--database", f"sqlite:///{store}", str(mbox)],
        env=environment,
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"ingest failed: {done.stderr.decode()[-500:]}")
    store.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="abusepipe-enrich-"))
    real = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "geodata.py")], capture_output=True, text=True, check=False
    )
    if real.returncode == 0:
        data = Path(real.stdout.strip())
        asn, country = data / "asn.mmdb", data / "geo-whois-asn-country.mmdb"
        print(f"databases: ip-location-db ({data})")
    else:
        asn, country = databases(work)
        print("databases: written here (no registry)")

    messages = corpus()
    plain, enriched = ParseOptions(), ParseOptions(enrichment=Enrichment(asn, country))
    parse_rate(messages[:200], enriched)  # warm: imports, the databases opened
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        rates["off"].append(parse_rate(messages, plain))
        rates["on"].append(parse_rate(messages, enriched))
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    print(f"parse: {len(messages):,} corpus messages in one process, {args.rounds} rounds")
    print(f"  off {off:,.0f} messages/s, on {on:,.0f} messages/s: {off / on - 1:+.1%} time")

    mbox = work / "reports.mbox"
    with mbox.open("wb") as out:
        for raw in many_reports(args.reports):
            out.write(
                b"From abuse@example.net Mon Nov 30 00:00:00 2026\n" + raw.replace(b"\r\n", b"\n") + b"\n"
            )
    base = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")} | {"PYTHONPATH": str(ROOT)}
    environments = {
        "off": base,
        "on": base | {"ABUSEPIPE_ASN_DB": str(asn), "ABUSEPIPE_COUNTRY_DB": str(country)},
    }
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for label, environment in environments.items():
            seconds[label].append(ingest_seconds(mbox, environment, work, label))
    off_s, on_s = statistics.median(seconds["off"]), statistics.median(seconds["on"])
    print(f"ingest: {args.reports:,} reports into SQLite, {args.rounds} rounds each")
    print(f"  off {off_s:.1f} s, on {on_s:.1f} s: {on_s / off_s - 1:+.1%} (target at most +10 %)")


if __name__ == "__main__":
    main()
