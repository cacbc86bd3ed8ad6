"""The sender's whole path in a real headless Chromium against real processes: `abusepipe portal`, the
confirmation mail caught by a real SMTP server on loopback, the link, "Delist IP", and `abusepipe policy`
(a real Postfix policy server on the same store) answering DUNNO where it rejected, in English and in
Russian. Any console error or CSP violation fails the test (tests/browser.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.browser import Page, chromium
from tests.conftest import ROOT, free_ports
from tests.console import CMD, cli
from tests.smtpsink import SmtpSink
from tests.test_policyd import read_reply, request

pytestmark = pytest.mark.integration
PORTAL_ENV = "ABUSEPIPE_PORTAL_URL"


class Desk:
    """A store with listed IPs, the portal and the policy server on it, and the relay they mail through."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.database = f"sqlite:///{tmp / 'store.sqlite3'}"
        self.sink = SmtpSink().start()
        self.portal_port, self.policy_port = free_ports(2), 0
        self.policy_port = self.portal_port + 1
        self.base = f"http://127.0.0.1:{self.portal_port}"
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
        return {
            **clean,
            "PYTHONPATH": str(ROOT),
            "ABUSEPIPE_DATABASE_URL": self.database,
            PORTAL_ENV: self.base + "/",
            "ABUSEPIPE_MAIL_RELAY": self.sink.relay,
            "ABUSEPIPE_MAIL_FROM": "delist@abuse.example.net",
        }

    def start(self) -> None:
        for args in (
            ["portal", "--listen", f"127.0.0.1:{self.portal_port}"],
            ["policy", "--listen", f"127.0.0.1:{self.policy_port}", "--refresh", "5"],
        ):
            log = (self.tmp / f"{args[0]}.log").open("wb")
            self.processes.append(subprocess.Popen([*CMD, *args], stderr=log, env=self.env()))
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as response:
                    if response.status == 200 and self.policy("192.0.2.1").startswith("action="):
                        return
            except OSError:
                pass
            for process in self.processes:
                assert process.poll() is None, self.logs()
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.2)

    def logs(self) -> str:
        return "\n".join(path.read_text() for path in self.tmp.glob("*.log"))

    def policy(self, ip: str) -> str:
        with socket.create_connection(("127.0.0.1", self.policy_port), timeout=5) as sock:
            sock.sendall(request(ip))
            return read_reply(sock)

    def list_by_reports(self, ip: str) -> None:
        """Three reporters' ARF reports about `ip`: the policy lists it (an automatic listing)."""
        from tests.mail import arf
        from tests.test_blocklist import original

        spool = self.tmp / f"spool-{ip}"
        spool.mkdir()
        now = datetime.now(UTC)
        for n in range(3):
            raw = arf("abuse", original(ip), fields=[("Source-IP", ip)])
            raw = raw.replace(b"fbl@isp.example", f"fbl@isp{n}.example".encode())
            (spool / f"{n}.eml").write_bytes(f"Date: {now:%a, %d %b %Y %H:%M:%S +0000}\r\n".encode() + raw)
        done = cli(self.database, "ingest", "--quiet", str(spool))
        assert done.returncode == 0, done.stderr

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.sink.stop()


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    desk = Desk(tmp_path_factory.mktemp("portal"))
    done = cli(desk.database, "blocklist", "list")  # creates the store
    assert done.returncode == 0, done.stderr
    desk.start()
    yield desk
    desk.stop()


def walk(page: Page, desk: Desk, *, ip: str, email: str, words: dict[str, str], lang: str) -> None:
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + 30  # the policy server's next look at the store (--refresh 5)
    while desk.policy(ip) == "action=DUNNO":
        assert time.monotonic() < deadline, desk.logs()
        time.sleep(0.25)
    assert desk.policy(ip).startswith("action=550 5.7.606 Access denied, banned sending IP [" + ip + "]")
    assert desk.base + "/" in desk.policy(ip)
    page.open(f"/?lang={lang}")
    driver = page.driver
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang  # type: ignore[attr-defined]
    page.open(f"/?ip={ip}")
    status = driver.find_element(By.ID, "status").text  # type: ignore[attr-defined]
    assert words["listed"] in status and "3" in status, status
    page.shot(f"portal-lookup-{lang}")
    form = driver.find_element(By.CSS_SELECTOR, "form.ask")  # type: ignore[attr-defined]
    form.find_element(By.NAME, "email").send_keys(email)
    page.follow(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert email in driver.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
    page.shot(f"portal-sent-{lang}")
    deadline = time.monotonic() + 30
    while not desk.sink.to(email):
        assert time.monotonic() < deadline, desk.logs()
        time.sleep(0.1)
    (received,) = desk.sink.to(email)
    assert received.message["Subject"] == words["subject"].format(ip=ip)
    link = received.link()
    assert link.startswith(desk.base + "/delist/")
    page.open(link.removeprefix(desk.base))
    page.shot(f"portal-confirm-{lang}")
    button = driver.find_element(By.CSS_SELECTOR, "form.delist button")  # type: ignore[attr-defined]
    assert button.text == words["button"]
    clicked = time.monotonic()
    page.follow(button)
    assert words["done"] in driver.find_element(By.TAG_NAME, "h1").text  # type: ignore[attr-defined]
    page.shot(f"portal-done-{lang}")
    while desk.policy(ip) != "action=DUNNO":
        assert time.monotonic() - clicked < 60, desk.policy(ip)
        time.sleep(0.25)
    page.open(link.removeprefix(desk.base), status=410)  # the link worked once


def test_a_sender_clears_an_ip_in_the_browser_in_english_and_russian(desk: Desk, tmp_path: Path) -> None:
    desk.list_by_reports("45.33.20.7")
    desk.list_by_reports("45.33.21.8")
    with chromium(desk.base, tmp_path) as page:
        walk(
            page,
            desk,
            ip="45.33.20.7",
            email="postmaster@sender.example",
            words={
                "listed": "45.33.20.7 is on our blocked-senders list",
                "subject": "Confirm the delisting request for {ip}",
                "button": "Delist IP",
                "done": "was removed",
            },
            lang="en",
        )
        walk(
            page,
            desk,
            ip="45.33.21.8",
            email="admin@sender-ru.example",
            words={
                "listed": "45.33.21.8 находится в нашем списке заблокированных отправителей",
                "subject": "Подтвердите запрос на исключение {ip} из списка",
                "button": "Исключить IP",
                "done": "исключён",
            },
            lang="ru",
        )


def test_hostile_input_in_the_browser_runs_no_script(desk: Desk, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    with chromium(desk.base, tmp_path) as page:
        page.open("/?lang=en&ip=%3Cscript%3Ewindow.pwned%3D1%3C%2Fscript%3E", status=400)
        form = page.driver.find_element(By.CSS_SELECTOR, "form.ask")  # type: ignore[attr-defined]
        form.find_element(By.NAME, "ip").clear()
        form.find_element(By.NAME, "ip").send_keys('"><img src=x onerror="window.pwned=1">')
        form.find_element(By.NAME, "email").send_keys("x@y.example")
        page.follow(
            form.find_element(By.CSS_SELECTOR, "button[type=submit]"),
            expected=f"{desk.base}/request - Failed to load resource: the server responded with a status of 400",
        )
        assert "not an IP address" in page.driver.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
