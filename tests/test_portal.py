"""The delist portal in process (the ASGI app on a real store, SQLite and PostgreSQL) with its outbox
delivering to a real SMTP server on loopback: the sender's path, its limits, hostile input, a relay
outage, the analyst queue, relisting; and privacy over real corpus reports."""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update

from abusepipe.errors import ConfigError
from blocklist import delist
from blocklist import listings as bl
from blocklist.delist import RequestLimits
from blocklist.evaluator import ListingEvaluator
from blocklist.policy import ListingPolicy
from ingest.runner import ParseOptions, to_stored
from ingest.sources import RawMessage
from sinks import models as m
from sinks import outbox
from sinks.mailer import MailRelay, OutboxSender
from sinks.store import ReportStore
from tests.conftest import ROOT
from tests.smtpsink import Received, SmtpSink
from tests.test_blocklist import report, trap_hit
from web.portal.app import PortalConfig, create_app

PORTAL_URL = "https://delist.example.net/"
IP = "45.33.7.9"


@dataclass
class Harness:
    store: ReportStore
    sink: SmtpSink
    client: TestClient
    config: PortalConfig

    def list_ip(
        self, ip: str = IP, *, reporters: int = 3, prefix: str = "r", at: datetime | None = None
    ) -> None:
        when = at or datetime.now(UTC)
        self.store.write([report(ip, f"{prefix}{i}@isp{i}.example", when) for i in range(reporters)])
        assert self.listing(ip) is not None and self.listing(ip).in_force(datetime.now(UTC))  # type: ignore[union-attr]

    def listing(self, ip: str = IP, kind: str = "ip") -> bl.Listing | None:
        with self.store.connect() as connection:
            return bl.get(connection, kind, ip)

    def events(self, ip: str = IP, kind: str = "ip") -> list[str]:
        with self.store.connect() as connection:
            return [c.event for c in reversed(bl.history(connection, kind, ip))]

    def ask(self, ip: str = IP, email: str = "postmaster@sender.example", **headers: str) -> tuple[int, str]:
        response = self.client.post("/request", data={"ip": ip, "email": email}, headers=headers)
        return response.status_code, response.text

    def link_for(self, email: str, *, count: int = 1) -> str:
        mails = self.wait_for(email, count)
        return mails[-1].link()

    def wait_for(self, email: str, count: int = 1, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.sink.to(email)) < count:
            assert time.monotonic() < deadline, f"no mail to {email}: {self.unsent()}"
            time.sleep(0.05)
        return self.sink.to(email)

    def unsent(self) -> list[dict[str, object]]:
        with self.store.connect() as connection:
            return [mail.document() for mail in outbox.mails(connection, unsent_only=True)]

    def form(self, link: str) -> tuple[str, dict[str, str]]:
        path = link.removeprefix(PORTAL_URL.rstrip("/"))
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text))
        return path, fields

    def delist(self, link: str) -> tuple[int, str]:
        path, fields = self.form(link)
        response = self.client.post(path, data=fields)
        return response.status_code, response.text


def make_harness(
    database_url: str,
    *,
    limits: RequestLimits | None = None,
    start_sink: bool = True,
) -> Iterator[Harness]:
    store = ReportStore.open(database_url)
    policy = ListingPolicy()
    store.after_commit = ListingEvaluator(store.engine, policy)
    sink = SmtpSink()
    if start_sink:
        sink.start()
    relay = MailRelay.parse(sink.relay, sender="delist@abuse.example.net")
    sender = OutboxSender(store, relay, interval=0.2, first_retry=0.3)
    config = PortalConfig(
        store=store,
        portal_url=PORTAL_URL,
        mail_from="delist@abuse.example.net",
        policy=policy,
        limits=limits or RequestLimits(),
        sender=sender,
    )
    try:
        with TestClient(create_app(config), base_url="http://testserver") as client:
            yield Harness(store, sink, client, config)
    finally:
        sink.stop()
        store.close()


@pytest.fixture
def portal(database_url: str) -> Iterator[Harness]:
    yield from make_harness(database_url)


def test_a_sender_clears_a_listed_ip_end_to_end(portal: Harness) -> None:
    portal.list_ip()
    page = portal.client.get("/", params={"ip": IP})
    assert page.status_code == 200
    assert "is on our blocked-senders list" in page.text
    assert "Independent recipients who reported junk from it since" in page.text and ": 3</li>" in page.text

    status, text = portal.ask()
    assert status == 202 and "on its way to postmaster@sender.example" in text
    mail = portal.wait_for("postmaster@sender.example")[0]
    assert mail.sender == "delist@abuse.example.net"
    assert mail.message["Subject"] == f"Confirm the delisting request for {IP}"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    link = mail.link()
    assert link.startswith(PORTAL_URL + "delist/")

    status, text = portal.delist(link)
    assert status == 200 and f"{IP} was removed" in text
    listing = portal.listing()
    assert listing is not None and listing.state == "delisted"
    assert portal.events()[-1] == "delisted-by-sender"
    assert "is not on our blocked-senders list" in portal.client.get("/", params={"ip": IP}).text
    with portal.store.connect() as connection:
        assert [r.state for r in delist.pending(connection, state=None)] == ["delisted"]


def test_links_work_once_expire_and_belong_to_one_ip(portal: Harness) -> None:
    portal.list_ip()
    portal.list_ip("45.33.9.77", prefix="s")
    portal.ask(email="a@sender.example")
    link = portal.link_for("a@sender.example")
    path, fields = portal.form(link)

    other = portal.client.post(path, data={**fields, "ip": "45.33.9.77"})
    assert other.status_code == 400 and "another IP" in other.text
    missing = portal.client.post(path, data={"ip": IP})
    assert missing.status_code == 403
    forged = portal.client.post(path, data={"ip": IP, "csrf": "0" * 64})
    assert forged.status_code == 403
    cross = portal.client.post(path, data=fields, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    assert portal.listing() is not None and portal.listing().state == "listed"  # type: ignore[union-attr]

    assert portal.client.post(path, data=fields).status_code == 200
    again = portal.client.post(path, data=fields)
    assert again.status_code == 410 and "used already" in again.text
    assert portal.client.get(path).status_code == 410
    assert portal.client.get("/delist/" + "x" * 43).status_code == 404
    assert portal.client.get("/delist/" + "x" * 400).status_code == 404

    portal.ask("45.33.9.77", email="b@sender.example")
    late = portal.link_for("b@sender.example")
    with portal.store.transaction() as connection:
        connection.execute(
            update(m.delist_requests).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    path, _ = late.removeprefix(PORTAL_URL.rstrip("/")), None
    assert portal.client.get(path).status_code == 410
    assert portal.client.post(path, data={"ip": "45.33.9.77", "csrf": "x"}).status_code == 403
    assert portal.listing("45.33.9.77").state == "listed"  # type: ignore[union-attr]


def test_the_third_self_service_delisting_goes_to_review_and_the_requester_hears_of_it(
    portal: Harness,
) -> None:
    for round_ in range(2):
        portal.list_ip(prefix=f"r{round_}-", at=datetime.now(UTC) + timedelta(seconds=round_))
        portal.ask(email="ops@sender.example")
        status, text = portal.delist(portal.link_for("ops@sender.example", count=round_ + 1))
        assert "was removed" in text
    portal.list_ip(prefix="r9-", at=datetime.now(UTC) + timedelta(seconds=5))
    assert portal.listing().ttl_seconds == 16 * 86400  # type: ignore[union-attr]  # listed a third time
    portal.ask(email="ops@sender.example")
    link = portal.link_for("ops@sender.example", count=3)
    assert "needs a review" in portal.client.get(link.removeprefix(PORTAL_URL.rstrip("/"))).text
    status, text = portal.delist(link)
    assert status == 200 and "waits for review" in text
    assert portal.listing().state == "listed"  # type: ignore[union-attr]
    assert portal.events()[-1] == "delist-requested"

    from web.portal.review import decide_and_tell

    with portal.store.transaction() as connection:
        (queued,) = delist.pending(connection)
        done = decide_and_tell(
            connection,
            portal.config.policy,
            queued.id,
            approve=False,
            reason="junk again on 2 Dec",
            actor="cli:a",
            now=datetime.now(UTC),
            mail_from="delist@abuse.example.net",
            portal_url=PORTAL_URL,
        )
    assert done.request.state == "refused" and [c.event for c in done.changes] == ["refused"]
    portal.config.sender.wake()  # type: ignore[union-attr]
    refusal = portal.wait_for("ops@sender.example", 4)[-1]
    assert refusal.message["Subject"] == f"{IP} stays on our blocked-senders list"
    assert "The reviewer's reason: junk again on 2 Dec" in refusal.text
    assert portal.listing().state == "listed"  # type: ignore[union-attr]


def test_network_and_manual_listings_go_to_review_and_approval_delists_them(portal: Harness) -> None:
    now = datetime.now(UTC)
    for host in range(1, 5):
        portal.list_ip(f"45.33.100.{host}", prefix=f"n{host}-")
    assert portal.listing("45.33.100.0/24", "network").in_force(now)  # type: ignore[union-attr]
    with portal.store.transaction() as connection:
        bl.add(
            connection,
            portal.config.policy,
            "ip",
            "192.0.2.200",
            reason="ticket 77 from bob@corp.example",
            actor="cli:a",
            now=now,
        )

    for ip, email in (("45.33.100.77", "n@sender.example"), ("192.0.2.200", "m@sender.example")):
        assert portal.ask(ip, email)[0] == 202
        _status, text = portal.delist(portal.link_for(email))
        assert "waits for review" in text

    with portal.store.transaction() as connection:
        queued = {r.ip: r for r in delist.pending(connection)}
        assert set(queued) == {"45.33.100.77", "192.0.2.200"}
        _, changes = delist.decide(
            connection,
            portal.config.policy,
            queued["45.33.100.77"].id,
            approve=True,
            reason="customer cleaned up",
            actor="cli:a",
            now=datetime.now(UTC),
        )
    assert [c.kind for c in changes] == ["network"]
    assert portal.listing("45.33.100.0/24", "network").state == "delisted"  # type: ignore[union-attr]
    page = portal.client.get("/", params={"ip": "192.0.2.200"}).text
    assert "Listed by our analysts." in page and "bob@corp.example" not in page and "ticket 77" not in page


def test_the_review_queue_from_the_cli_mails_the_decision(database_url: str, tmp_path: Path) -> None:
    from tests.console import cli

    for harness in make_harness(database_url):
        harness.list_ip()
        with harness.store.transaction() as connection:
            bl.add(
                connection,
                harness.config.policy,
                "network",
                "45.33.7.0/24",
                reason="x",
                actor="t",
                now=datetime.now(UTC),
            )
        harness.ask(email="ru@sender.example", **{"Accept-Language": "ru-RU,ru;q=0.9"})
        status, _text = harness.delist(harness.link_for("ru@sender.example"))
        assert status == 200
        listed = cli(database_url, "blocklist", "requests", "list", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert '"state": "queued"' in listed.stdout
        request_id = re.search(r'"id": (\d+)', listed.stdout).group(1)  # type: ignore[union-attr]
        done = cli(
            database_url,
            "blocklist",
            "requests",
            "approve",
            request_id,
            "--reason",
            "fixed",
            env={
                "ABUSEPIPE_MAIL_RELAY": harness.sink.relay,
                "ABUSEPIPE_MAIL_FROM": "delist@abuse.example.net",
            },
        )
        assert done.returncode == 0, done.stderr
        assert "delisted-by-analyst network 45.33.7.0/24" in done.stdout
        decision = harness.wait_for("ru@sender.example", 2)[-1]
        assert decision.message["Subject"] == f"{IP} исключён из нашего списка заблокированных отправителей"
        assert "Причина, указанная проверяющим: fixed" in decision.text
        again = cli(database_url, "blocklist", "requests", "refuse", request_id, "--reason", "no")
        assert again.returncode == 2 and "not waiting for review" in again.stderr
        assert "Traceback" not in again.stderr


def test_rate_limits_per_client_address_and_ip(database_url: str) -> None:
    limits = RequestLimits(per_email_per_day=2, per_ip_per_day=3, per_client_per_hour=4)
    for harness in make_harness(database_url, limits=limits):
        harness.list_ip()
        assert harness.ask(email="one@sender.example")[0] == 202
        assert harness.ask(email="one@sender.example")[0] == 202
        status, text = harness.ask(email="one@sender.example")
        assert status == 429 and "for this e-mail address today" in text
        assert harness.ask(email="two@sender.example")[0] == 202
        status, text = harness.ask(email="three@sender.example")
        assert status == 429 and "for this IP today" in text
        harness.list_ip("45.33.9.77", prefix="s")
        assert harness.ask("45.33.9.77", email="four@sender.example")[0] == 202
        status, text = harness.ask("45.33.9.77", email="five@sender.example")
        assert status == 429 and "from your address" in text  # the fifth request of this client
        assert len(harness.wait_for("one@sender.example", 2)) == 2
        time.sleep(0.5)
        assert len(harness.sink.received) == 4


HOSTILE = [
    "a@b.example\r\nBcc: victim@else.example",
    "a@b.example\nSubject: hi",
    '"x"@b.example',
    "Name <a@b.example>",
    "a@b.example, c@d.example",
    "<script>window.pwned=1</script>@b.example",
    "a@localhost",
    "a@-b.example",
    "a" * 300 + "@b.example",
    "",
]


def test_hostile_input_is_refused_escaped_and_mails_nothing(portal: Harness) -> None:
    portal.list_ip()
    for email in HOSTILE:
        status, text = portal.ask(email=email)
        assert status in (400, 422), (email, status)
        assert "<script>window.pwned" not in text
    for ip in ["<script>window.pwned=1</script>", "45.33.7.9\r\nX: y", "1.2.3.4/24", "x" * 500, ""]:
        status, text = portal.ask(ip=ip)
        assert status == 400, ip
        assert "<script>window.pwned" not in text
        look = portal.client.get("/", params={"ip": ip})
        assert "<script>window.pwned" not in look.text
        assert look.status_code in (200, 400)
    assert portal.client.get("/api/v1/lookup", params={"ip": "nonsense"}).json() == {
        "error": "not an IP address"
    }
    assert portal.ask(ip="198.18.0.1")[1].count("This IP is not listed") == 1
    redirect = portal.client.get("/?lang=https://evil.example", follow_redirects=False)
    assert redirect.status_code == 200 and "evil.example" not in redirect.headers.get("location", "")
    time.sleep(0.5)
    assert portal.sink.received == []
    with portal.store.connect() as connection:
        assert connection.execute(select(m.outbox)).first() is None


def test_an_internationalized_domain_is_mailed_in_ascii(portal: Harness) -> None:
    portal.list_ip()
    assert portal.ask(email="ops@пример.испытание")[0] == 202
    assert portal.wait_for("ops@xn--e1afmkfd.xn--80akhbyknj4f")


def test_a_relay_outage_delays_the_mail_and_loses_nothing(database_url: str) -> None:
    for harness in make_harness(database_url, start_sink=False):
        harness.list_ip()
        status, text = harness.ask(email="late@sender.example")
        assert status == 202 and "on its way" in text
        assert "Connection refused" not in text and "Errno" not in text
        deadline = time.monotonic() + 10
        while not any(mail["last_error"] for mail in harness.unsent()):
            assert time.monotonic() < deadline, harness.unsent()
            time.sleep(0.1)
        (waiting,) = harness.unsent()
        assert waiting["attempts"] >= 1 and "Connection" in str(waiting["last_error"])
        harness.sink.start()
        (mail,) = harness.wait_for("late@sender.example")
        assert harness.delist(mail.link())[0] == 200
        time.sleep(0.8)
        assert len(harness.sink.to("late@sender.example")) == 1 and harness.unsent() == []


def test_new_junk_after_a_delisting_lists_the_ip_again_for_longer(portal: Harness) -> None:
    portal.list_ip()
    portal.ask()
    portal.delist(portal.link_for("postmaster@sender.example"))
    assert portal.listing().state == "delisted"  # type: ignore[union-attr]
    portal.store.write(
        [trap_hit(IP, f"trap{i}@traps.example", datetime.now(UTC) + timedelta(seconds=1)) for i in range(2)]
    )
    listing = portal.listing()
    assert listing is not None and listing.in_force(datetime.now(UTC))
    assert listing.ttl_seconds == 4 * 86400
    assert portal.events()[-2:] == ["delisted-by-sender", "relisted"]
    page = portal.client.get("/", params={"ip": IP}).text
    assert "spam traps" in page and "trap0@traps.example" not in page


def test_languages_follow_accept_language_and_the_switch(portal: Harness) -> None:
    ru = portal.client.get("/", headers={"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.5"})
    assert '<html lang="ru">' in ru.text and "Отправить мне ссылку" in ru.text
    assert ru.headers["content-language"] == "ru"
    en = portal.client.get("/?lang=en", headers={"Accept-Language": "ru"})
    assert '<html lang="en">' in en.text and "Send me the link" in en.text
    assert "lang=en" in en.headers["set-cookie"]
    sticky = portal.client.get("/", headers={"Accept-Language": "ru"})
    assert '<html lang="en">' in sticky.text  # the cookie the switch set wins
    assert (
        portal.client.get("/?lang=xx", headers={"Accept-Language": "de"}).headers["content-language"] == "en"
    )


def test_headers_csp_and_json_twin(portal: Harness) -> None:
    portal.list_ip()
    page = portal.client.get("/", params={"ip": IP})
    csp = page.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in page.text and "style=" not in page.text
    twin = portal.client.get("/api/v1/lookup", params={"ip": IP}).json()
    assert twin["listed"] is True and twin["evidence"]["reporters"] == 3
    assert [x["kind"] for x in twin["listings"]] == ["ip"]
    assert "actor" not in str(twin) and "@" not in str(twin)
    assert portal.client.get("/healthz").text == "ok\n"


def test_every_string_has_a_russian_translation() -> None:
    from babel.messages.extract import extract_from_dir

    from web.portal.i18n import translations

    portal = ROOT / "web" / "portal"
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found = {message for _, _, message, _, _ in extract_from_dir(str(portal), method_map, options)}
    assert len(found) > 50
    ru = translations("ru")
    missing = [text for text in found if isinstance(text, str) and ru.gettext(text) == text]
    assert missing == []


# --- privacy over real reports -------------------------------------------------------------------------

CORPUS = ROOT.parent / "shared" / "corpus"


def test_no_page_or_mail_names_a_reporter_or_a_trap(database_url: str, tmp_path: Path) -> None:
    sources = sorted((ROOT / "tests" / "samples").rglob("*.eml"))
    if CORPUS.is_dir():
        sources += sorted(CORPUS.rglob("*.eml"))
    for harness in make_harness(database_url):
        stored = []
        now = datetime.now(UTC)
        for path in sources:
            stored.append(to_stored(RawMessage(path.read_bytes(), str(path)), ParseOptions(), now))
        harness.store.write(stored)
        traps = [trap_hit(IP, f"spamtrap{i}@honeypot.example", now) for i in range(2)]
        harness.store.write(traps)
        with harness.store.connect() as connection:
            reporters = {r for (r,) in connection.execute(select(m.reports.c.reporter)) if r and "@" in r}
            ips = [
                row.key
                for row in connection.execute(select(m.offenders.c.key).where(m.offenders.c.kind == "ip"))
            ]
            for ip in ips[:40]:
                if not bl.covering(connection, ip, now):
                    bl.add(
                        connection,
                        harness.config.policy,
                        "ip",
                        ip,
                        reason="t",
                        actor="t",
                        now=now,
                        force=True,
                    )
            connection.commit()
        assert len(reporters) >= 5 and "spamtrap0@honeypot.example" in reporters
        seen: list[str] = []
        for ip in [IP, *ips[:40]]:
            for lang in ("en", "ru"):
                seen.append(harness.client.get("/", params={"ip": ip, "lang": lang}).text)
            seen.append(harness.client.get("/api/v1/lookup", params={"ip": ip}).text)
        harness.ask(IP, "privacy@sender.example")
        link = harness.link_for("privacy@sender.example")
        seen.append(harness.client.get(link.removeprefix(PORTAL_URL.rstrip("/"))).text)
        seen.append(harness.delist(link)[1])
        seen += [mail.raw.decode("utf-8", "replace") for mail in harness.sink.received]
        everything = "\n".join(seen).lower()
        leaked = sorted(r for r in reporters if r.lower() in everything)
        assert leaked == []
        assert "honeypot.example" not in everything


# --- the review queue in the analyst console ------------------------------------------------------------


def test_the_console_lists_the_queue_and_an_admin_decides_with_a_mail(portal: Harness) -> None:
    from sinks import access
    from web.console.app import ConsoleConfig
    from web.console.app import create_app as console_app

    portal.list_ip()
    now = datetime.now(UTC)
    with portal.store.transaction() as connection:
        bl.add(connection, portal.config.policy, "network", "45.33.7.0/24", reason="x", actor="t", now=now)
        tokens = {
            role: access.create_token(connection, f"t-{role}", role, now=now)
            for role in ("viewer", "analyst", "admin")
        }
    portal.ask(email="queue@sender.example")
    assert "waits for review" in portal.delist(portal.link_for("queue@sender.example"))[1]

    relay = MailRelay.parse(portal.sink.relay, sender="delist@abuse.example.net")
    config = ConsoleConfig(
        store=portal.store,
        policy=portal.config.policy,
        portal_url=PORTAL_URL,
        mail_from="delist@abuse.example.net",
        sender=OutboxSender(portal.store, relay, interval=0.2, first_retry=0.3),
    )
    with TestClient(console_app(config)) as console:

        def get(path: str, role: str) -> Any:
            return console.get(path, headers={"Authorization": f"Bearer {tokens[role]}"})

        listed = get("/api/v1/blocklist?state=listed", "viewer").json()
        assert {(x["kind"], x["key"]) for x in listed} == {("ip", IP), ("network", "45.33.7.0/24")}
        assert get("/api/v1/blocklist/requests", "viewer").status_code == 403  # requesters are people
        (queued,) = get("/api/v1/blocklist/requests", "analyst").json()
        assert queued["email"] == "queue@sender.example" and queued["state"] == "queued"
        page = get("/blocklist/requests", "admin").text
        assert (
            "queue@sender.example" in page and f'action="/blocklist/requests/{queued["id"]}/approve"' in page
        )
        shown = get(f"/api/v1/blocklist/ip/{IP}", "analyst").json()
        assert shown["history"][0]["event"] == "delist-requested"
        assert "45.33.7.0/24" in get(f"/blocklist/ip/{IP}", "analyst").text

        url = f"/api/v1/blocklist/requests/{queued['id']}/approve"
        bearer = {"Authorization": f"Bearer {tokens['analyst']}"}
        assert console.post(url, json={"reason": "ok"}, headers=bearer).status_code == 403
        bearer = {"Authorization": f"Bearer {tokens['admin']}"}
        decided = console.post(url, json={"reason": "cleaned up"}, headers=bearer)
        assert decided.status_code == 200, decided.text
        assert decided.json()["state"] == "approved"
        assert {c["kind"] for c in decided.json()["changes"]} == {"ip", "network"}
        again = console.post(url, json={"reason": "again"}, headers=bearer)
        assert again.status_code == 400 and "not waiting for review" in again.json()["error"]
        mail = portal.wait_for("queue@sender.example", 2)[-1]
        assert mail.message["Subject"] == f"{IP} was removed from our blocked-senders list"
        assert "The reviewer's reason: cleaned up" in mail.text
        audit = get("/api/v1/audit", "admin").json()
        assert audit[0]["action"] == "delist-approve"


def test_mail_goes_through_a_relay_that_requires_starttls_and_auth(tmp_path: Path) -> None:
    import trustme

    from sinks.outbox import QueuedMail
    from web.portal import mails

    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    sink = SmtpSink(tls=server, login=("delist", "s3cret-pass")).start()
    try:
        now = datetime.now(UTC)
        asked = delist.DelistRequest(
            1, IP, "tls@sender.example", "en", "mailed", now, now, None, None, None, None
        )
        message = mails.confirmation(
            sender="delist@abuse.example.net",
            request=asked,
            link="https://x/delist/abc",
            minutes=30,
            portal="https://x/",
            now=now,
        )
        raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        mail = QueuedMail(1, "tls@sender.example", "delist-confirm", raw, 0, now, now, None, None, None)

        def relay(**options: Any) -> MailRelay:
            parsed = MailRelay.parse(sink.relay, sender="delist@abuse.example.net", **options)
            return replace(parsed, timeout=3.0)

        with pytest.raises(smtplib.SMTPException):  # this relay takes nothing in clear
            relay().send(mail)
        with pytest.raises(ssl.SSLError):  # a certificate no CA we trust signed
            relay(starttls=True).send(mail)
        with pytest.raises(smtplib.SMTPException):
            relay(starttls=True, ca_file=str(ca_file)).send(mail)  # TLS, but no AUTH
        wrong = SecretStr("wrong")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            relay(starttls=True, ca_file=str(ca_file), username="delist", password=wrong).send(mail)
        assert sink.received == []
        good = SecretStr("s3cret-pass")
        relay(starttls=True, ca_file=str(ca_file), username="delist", password=good).send(mail)
        (got,) = sink.wait(1)
        assert got.recipients == ("tls@sender.example",) and "https://x/delist/abc" in got.text
        with pytest.raises(ConfigError):  # a password is never sent without TLS
            relay(username="delist", password=good)
    finally:
        sink.stop()


def test_bad_portal_settings_are_one_line_each(tmp_path: Path) -> None:
    import socket

    from tests.console import cli

    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            ({}, ["--listen", f"127.0.0.1:{port}"], "cannot listen on 127.0.0.1:"),
            ({"ABUSEPIPE_MAIL_RELAY": "nohost"}, [], "ABUSEPIPE_MAIL_RELAY 'nohost': give host:port"),
            ({"ABUSEPIPE_PORTAL_URL": "ftp://x"}, [], "give the portal's public http(s) URL"),
            ({"ABUSEPIPE_MAIL_FROM": "a@b.example\r\nBcc: c@d.example"}, [], "ABUSEPIPE_MAIL_FROM"),
            ({"ABUSEPIPE_PORTAL_SECRET": "short"}, [], "at least 16 characters"),
            (
                {
                    "ABUSEPIPE_MAIL_RELAY": "127.0.0.1:25",
                    "ABUSEPIPE_MAIL_USERNAME": "u",
                    "ABUSEPIPE_MAIL_PASSWORD": "p",
                },
                [],
                "needs ABUSEPIPE_MAIL_STARTTLS",
            ),
            ({}, ["--workers", "0"], "--workers: at least 1"),
        ]
        for env, args, expected in cases:
            done = cli(database, "portal", *args, env=env)
            assert done.returncode == 2, (env, args, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and expected in lines[0] and "Traceback" not in done.stderr, done.stderr
