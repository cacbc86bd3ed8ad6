"""Abuse contacts and reverse DNS against a real DNS server (Debian's dnsmasq on loopback, serving PTR,
A/AAAA and an Abusix-style TXT zone) and a loopback RDAP stand-in (the registries are out of reach from
here; its answers are shaped as RFC 9083 and RIPE's and ARIN's documentation show them)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dns.resolver
import pytest
from sqlalchemy import Connection

from notify.contacts import ContactFinder, ContactSources
from notify.rdap import abuse_email
from sinks.store import ReportStore
from tests.conftest import ROOT, free_ports
from tests.console import cli

ZONE = "abuse-contacts.abusix.zone"


def dnsmasq_path() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "dnsmasq")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        import os

        if os.environ.get("CI"):
            pytest.fail(f"CI must run the DNS tests: scripts/dnsmasq failed: {done.stderr.strip()}")
        pytest.skip(f"no dnsmasq: {done.stderr.strip()}")
    return done.stdout.strip()


class DnsServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_ports(1)
        records = [
            "--ptr-record=9.7.33.45.in-addr.arpa,mail.sender.example",
            "--host-record=mail.sender.example,45.33.7.9",
            f"--txt-record=9.7.33.45.{ZONE},abuse@hoster.example",
            "--ptr-record=1.8.33.45.in-addr.arpa,liar.example",
            "--host-record=liar.example,45.33.99.99",
            "--ptr-record=9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.7.1.0.a.2.ip6.arpa,v6.sender.example",
            "--host-record=v6.sender.example,2a01:7e00::9",
            f"--txt-record=9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.7.1.0.a.2.{ZONE},abuse-v6@hoster.example",
            f"--txt-record=2.2.33.45.{ZONE},none@none",  # registries' placeholders
            f"--txt-record=3.2.33.45.{ZONE},abuse@example.com",
        ]
        local = [f"--local=/{zone}/" for zone in (ZONE, "in-addr.arpa", "ip6.arpa", "example")]
        self.log = tmp / "dnsmasq.log"
        self.process = subprocess.Popen(
            [
                dnsmasq_path(), "--no-daemon", f"--port={self.port}", "--listen-address=127.0.0.1",
                "--bind-interfaces", "--no-resolv", "--no-hosts", "--user=root", *local, *records,
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], self.port, 1.0
        deadline = time.monotonic() + 20
        while True:
            try:
                resolver.resolve("mail.sender.example", "A")
                return
            except dns.exception.DNSException:
                assert self.process.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, self.log.read_text()
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def rdap_entity(handle: str, roles: list[str], email: str, **more: Any) -> dict[str, Any]:
    vcard = [
        "vcard",
        [["version", {}, "text", "4.0"], ["fn", {}, "text", handle], ["email", {}, "text", email]],
    ]
    return {"objectClassName": "entity", "handle": handle, "roles": roles, "vcardArray": vcard, **more}


RIPE_LIKE = {
    "rdapConformance": ["rdap_level_0"],
    "objectClassName": "ip network",
    "handle": "45.33.8.0 - 45.33.8.255",
    "startAddress": "45.33.8.0",
    "endAddress": "45.33.8.255",
    "entities": [
        rdap_entity(
            "ORG-EX1-RIPE",
            ["registrant"],
            "info@example-hoster.example",
            entities=[rdap_entity("AR123-RIPE", ["abuse"], "Abuse@Example-Hoster.example")],
        ),
        rdap_entity("EX-TECH", ["technical"], "noc@example-hoster.example"),
    ],
}


class RdapStandIn:
    def __init__(self) -> None:
        answers = {
            "/ip/45.33.8.1": (302, {"Location": "/registry/ip/45.33.8.1"}, b""),
            "/registry/ip/45.33.8.1": (200, {}, json.dumps(RIPE_LIKE).encode()),
            "/ip/45.33.8.0": (200, {}, json.dumps(RIPE_LIKE).encode()),
            "/ip/45.33.66.6": (500, {}, b"oops"),
            "/ip/45.33.77.7": (200, {}, b"<html>not json</html>"),
            "/ip/45.33.55.5": (200, {}, b'{"x": "' + b"a" * (2 << 20) + b'"}'),
            "/ip/45.33.2.2": (
                200,
                {},
                json.dumps({"entities": [rdap_entity("P", ["abuse"], "noreply@hoster.example")]}).encode(),
            ),
            "/ip/45.33.2.3": (
                200,
                {},
                json.dumps({"entities": [rdap_entity("P", ["abuse"], "please see www")]}).encode(),
            ),
        }
        self.asked: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                self.asked.append(handler.path)
                status, headers, body = answers.get(handler.path, (404, {}, b'{"errorCode": 404}'))
                handler.send_response(status)
                for name, value in {"Content-Type": "application/rdap+json", **headers}.items():
                    handler.send_header(name, value)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[DnsServer, RdapStandIn]]:
    dns_server, rdap_server = DnsServer(tmp_path), RdapStandIn()
    yield dns_server, rdap_server
    dns_server.stop()
    rdap_server.stop()


@pytest.fixture
def connection(store: ReportStore) -> Iterator[Connection]:
    """One transaction on the store (SQLite, and PostgreSQL in the integration run)."""
    with store.transaction() as opened:
        yield opened


def finder(services: tuple[DnsServer, RdapStandIn], **overrides: Any) -> ContactFinder:
    dns_server, rdap_server = services
    sources = ContactSources(
        rdap_url=rdap_server.url, dns_server=("127.0.0.1", dns_server.port), dns_timeout=2.0, **overrides
    )
    return ContactFinder(sources)


def test_abusix_first_then_rdap_with_forward_confirmed_reverse_dns(
    services: tuple[DnsServer, RdapStandIn], connection: Connection
) -> None:
    looker = finder(services)
    first = looker.find(connection, "45.33.7.9")
    assert (first.contact, first.origin) == ("abuse@hoster.example", "abusix")
    assert (first.rdns, first.rdns_confirmed) == ("mail.sender.example", True)
    v6 = looker.find(connection, "2a01:7e00:0::9")
    assert (v6.ip, v6.contact, v6.rdns, v6.rdns_confirmed) == (
        "2a01:7e00::9", "abuse-v6@hoster.example", "v6.sender.example", True,
    )  # fmt: skip
    ripe = looker.find(connection, "45.33.8.1")
    assert (ripe.contact, ripe.origin) == (
        "abuse@example-hoster.example",
        "rdap",
    )  # the nested abuse role
    assert "45.33.8.0 - 45.33.8.255" in (ripe.detail or "") and "/registry/" in (ripe.detail or "")
    assert (ripe.rdns, ripe.rdns_confirmed) == ("liar.example", False)  # its name points elsewhere
    unknown = looker.find(connection, "45.33.88.8")
    assert (unknown.contact, unknown.origin, unknown.error) == (None, "none", None)
    assert unknown.expires_at == unknown.fetched_at + timedelta(days=1)


def test_answers_are_cached_overrides_win_and_failures_are_one_line(
    services: tuple[DnsServer, RdapStandIn], tmp_path: Path
) -> None:
    dns_server, rdap_server = services
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    env = {"ABUSEPIPE_DNS_SERVER": f"127.0.0.1:{dns_server.port}", "ABUSEPIPE_RDAP_URL": rdap_server.url}

    def contact(*args: str, extra: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
        done = cli(database, "contact", *args, "--format", "json", env={**env, **(extra or {})})
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, json.loads(done.stdout) if done.stdout else {}, done.stderr

    code, found, _ = contact("45.33.8.1")
    assert code == 0 and found["contact"] == "abuse@example-hoster.example" and found["cached"] is False
    asked = len(rdap_server.asked)
    overridden = {"ABUSEPIPE_CONTACT_OVERRIDES": '{"45.33.8.0/24": "noc@override.example"}'}
    code, found, _ = contact("45.33.8.1", extra=overridden)
    assert (found["contact"], found["origin"]) == ("noc@override.example", "override")
    dns_server.stop()
    rdap_server.stop()
    code, found, _ = contact("45.33.8.1")
    assert code == 0 and found["cached"] is True and found["contact"] == "abuse@example-hoster.example"
    assert len(rdap_server.asked) == asked  # nothing asked again
    code, found, stderr = contact(
        "45.33.8.1", "--refresh", extra={"ABUSEPIPE_RDAP_URL": "http://127.0.0.1:9/"}
    )
    assert code == 3 and found["contact"] is None and found["error"]
    assert len(stderr.strip().splitlines()) == 1 and "warning: " in stderr and "RDAP" in stderr
    bad = cli(database, "contact", "not-an-ip", env=env)
    assert bad.returncode == 2 and "is not an IP address" in bad.stderr


def test_registry_failures_are_recorded_and_kept_briefly(
    services: tuple[DnsServer, RdapStandIn], connection: Connection
) -> None:
    looker = finder(services)
    for ip, reason in (
        ("45.33.66.6", "HTTP 500"),
        ("45.33.77.7", "not JSON"),
        ("45.33.55.5", "over"),
    ):
        failed = looker.find(connection, ip)
        assert failed.contact is None and reason in (failed.error or ""), failed
        assert failed.expires_at == failed.fetched_at + timedelta(hours=1)


def test_abuse_email_reads_only_what_rdap_allows() -> None:
    assert abuse_email(RIPE_LIKE) == "abuse@example-hoster.example"
    hostile = {"entities": [rdap_entity("X", ["abuse"], "a@b.example\r\nBcc: c@d.example")]}
    assert abuse_email(hostile) is None
    deep: dict[str, Any] = {"entities": []}
    level = deep
    for _ in range(50):
        child: dict[str, Any] = {"roles": ["registrant"], "entities": []}
        level["entities"].append(child)
        level = child
    level["entities"].append(rdap_entity("deep", ["abuse"], "deep@x.example"))
    assert abuse_email(deep) is None  # beyond the depth read
    assert abuse_email({"entities": "nonsense"}) is None


def test_placeholders_timeouts_and_refusals_are_no_contact(
    services: tuple[DnsServer, RdapStandIn], connection: Connection
) -> None:
    looker = finder(services)
    for ip in ("45.33.2.2", "45.33.2.3"):  # a placeholder in the zone, then one (or text) in RDAP
        found = looker.find(connection, ip)
        assert (found.contact, found.origin, found.error) == (None, "none", None), found
    refused = finder(services, abusix_zone="contacts.elsewhere.example.org")  # dnsmasq: REFUSED
    found = refused.find(connection, "45.33.8.1", refresh=True)
    assert found.contact == "abuse@example-hoster.example"  # RDAP answered all the same
    assert "DNS" in (found.error or "")
    silent = ContactFinder(
        ContactSources(rdap_url="", dns_server=("127.0.0.1", free_ports(1)), dns_timeout=0.5)
    )  # nothing listens: every query times out
    found = silent.find(connection, "45.33.7.9", refresh=True)
    assert (found.contact, found.rdns) == (None, None) and "Timeout" in (found.error or ""), found
