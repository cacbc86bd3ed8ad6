"""The network owners' feed through the portal: a key to a range granted by the link mailed (through a
real SMTP server on loopback) to the range's RDAP abuse contact (a loopback stand-in), the CSV it
reads, revocation; never a reporter's or a trap's address."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from blocklist.evaluator import ListingEvaluator
from blocklist.policy import ListingPolicy
from sinks.mailer import MailRelay, OutboxSender
from sinks.store import ReportStore
from tests.console import cli
from tests.smtpsink import SmtpSink
from tests.test_blocklist import report, trap_hit
from tests.test_contacts import RdapStandIn
from web.portal.app import PortalConfig, create_app

PORTAL = "https://delist.example.net/"


@pytest.fixture
def portal(database_url: str) -> Iterator[tuple[TestClient, ReportStore, SmtpSink]]:
    store = ReportStore.open(database_url)
    store.after_commit = ListingEvaluator(store.engine, ListingPolicy())
    sink, registry = SmtpSink().start(), RdapStandIn()
    config = PortalConfig(
        store=store,
        portal_url=PORTAL,
        mail_from="delist@abuse.example.net",
        sender=OutboxSender(
            store, MailRelay.parse(sink.relay, sender="delist@abuse.example.net"), interval=0.2
        ),
        rdap_url=registry.url,
    )
    try:
        with TestClient(create_app(config)) as client:
            yield client, store, sink
    finally:
        sink.stop()
        registry.stop()
        store.close()


def test_an_owner_gets_a_key_to_its_range_and_reads_the_csv(
    portal: tuple[TestClient, ReportStore, SmtpSink], database_url: str, tmp_path: Path
) -> None:
    client, store, sink = portal
    now = datetime.now(UTC)
    store.write([report("45.33.8.1", f"victim{i}@isp{i}.example", now) for i in range(3)])
    store.write([trap_hit("45.33.8.1", f"trap{i}@honeypot.example", now) for i in range(2)])
    store.write([report("45.33.8.7", "someone@isp.example", now), report("45.33.9.1", "x@isp.example", now)])

    for bad, status in (("45.0.0.0/8", 400), ("10.1.2.0/24", 400), ("nonsense", 400)):
        assert client.post("/feed", data={"network": bad}).status_code == status
    asked = client.post("/feed", data={"network": "45.33.8.0/24"})
    assert asked.status_code == 202 and "a…@example-hoster.example" in asked.text
    (mail,) = sink.wait(1)
    assert mail.recipients == ("abuse@example-hoster.example",)
    link = re.search(r"https://\S+/feed/confirm/[\w-]+", mail.text).group(0)  # type: ignore[union-attr]
    path = link.removeprefix(PORTAL.rstrip("/"))
    page = client.get(path)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert client.post(path, data={}).status_code == 403
    granted = client.post(path, data={"csrf": csrf})
    assert granted.status_code == 200
    assert client.post(path, data={"csrf": csrf}).status_code == 410  # the link worked once
    key_url = re.search(r"https://\S+/feed/[\w-]+\.csv", granted.text).group(0)  # type: ignore[union-attr]

    answer = client.get(key_url.removeprefix(PORTAL.rstrip("/")))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = {row["ip"]: row for row in csv.DictReader(io.StringIO(answer.text))}
    assert set(rows) == {"45.33.8.1", "45.33.8.7"}  # 45.33.9.1 is another network's
    one = rows["45.33.8.1"]
    assert (one["reports"], one["reporters"], one["trap_hits"], one["listed"]) == ("5", "5", "2", "yes")
    assert one["feedback_mix"] == "abuse:5" and one["day"] == now.date().isoformat()
    assert "@" not in answer.text.replace(one["sample_mail_from_domain"], "")  # no reporter, no trap address
    assert "honeypot" not in answer.text and "victim" not in answer.text

    listed = cli(database_url, "feed", "list", "--format", "json")
    assert listed.returncode == 0 and '"network": "45.33.8.0/24"' in listed.stdout
    key_id = re.search(r'"id": (\d+)', listed.stdout).group(1)  # type: ignore[union-attr]
    assert cli(database_url, "feed", "revoke", key_id).returncode == 0
    assert client.get(key_url.removeprefix(PORTAL.rstrip("/"))).status_code == 404
    assert client.get("/feed/" + "x" * 43 + ".csv").status_code == 404
