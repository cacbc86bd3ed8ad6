"""Fetch real IP data for the enrichment tests from the npm registry (once; cached in .cache/geodata):
ip-location-db's geo-whois-asn-country MaxMind database (CC0-1.0), and its IPv4 ASN ranges (CSV, CC BY 4.0:
DB-IP and RouteViews data) written as a MaxMind database (`asn.mmdb`, GeoLite2-ASN's record shape) with
mmdb-writer. Nothing of it is committed. Prints the directory.

    python scripts/geodata.py
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org/"
PACKAGES = {
    "@ip-location-db/geo-whois-asn-country-mmdb": ["package/geo-whois-asn-country.mmdb"],
    "@ip-location-db/asn": ["package/asn-ipv4.csv", "package/asn-ipv6.csv"],
}
HERE = Path(__file__).resolve().parent.parent / ".cache" / "geodata"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        return bytes(response.read())


def main() -> int:
    HERE.mkdir(parents=True, exist_ok=True)
    for package, members in PACKAGES.items():
        if all((HERE / Path(member).name).is_file() for member in members):
            continue
        meta = json.loads(fetch(REGISTRY + package.replace("/", "%2f")))
        version = meta["dist-tags"]["latest"]
        dist = meta["versions"][version]["dist"]
        tarball = fetch(dist["tarball"])
        if hashlib.sha1(tarball).hexdigest() != dist["shasum"]:
            print(f"scripts/geodata.py: {package} {version}: checksum mismatch", file=sys.stderr)
            return 1
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            for member in members:
                extracted = archive.extractfile(member)
                if extracted is None:
                    print(f"scripts/geodata.py: {package}: no {member}", file=sys.stderr)
                    return 1
                (HERE / Path(member).name).write_bytes(extracted.read())
        (HERE / f"{package.rpartition('/')[2]}.version").write_text(version + "\n")
    asn = HERE / "asn.mmdb"
    if not asn.is_file():
        write_asn(HERE / "asn-ipv4.csv", asn)
    print(HERE)
    return 0


def write_asn(source: Path, target: Path) -> None:
    import csv  # noqa: PLC0415

    from mmdb_writer import MMDBWriter  # noqa: PLC0415 (a dev dependency)
    from netaddr import IPRange, IPSet  # noqa: PLC0415

    writer = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type="ip-location-db-asn (GeoLite2-ASN shape)"
    )
    with source.open(newline="", encoding="utf-8") as rows:
        for start, end, number, organisation in csv.reader(rows):
            record = {"autonomous_system_number": int(number), "autonomous_system_organization": organisation}
            writer.insert_network(IPSet(IPRange(start, end)), record)
    partial = target.with_suffix(".partial")
    writer.to_db_file(str(partial))
    partial.rename(target)


if __name__ == "__main__":
    raise SystemExit(main())
