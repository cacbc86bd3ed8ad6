"""The console in a real headless Chromium: log in, the overview chart, offenders -> offender -> report
-> raw download, search; hostile mail browsed without a script running or the layout breaking. Any
console error or CSP violation fails the test (tests/browser.py)."""

from __future__ import annotations

import email.utils
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.browser import Page, chromium
from tests.console import Console, cli
from tests.mail import JUNK_HEADERS, arf, forward, hostile_junk, message

pytestmark = pytest.mark.integration


def recent_reports(count: int) -> list[bytes]:
    """Reports of today, from several reporters and sources, so that the charts have bars."""
    now = datetime.now(UTC)
    out = []
    for n in range(count):
        # half of them today, the rest spread over the week: the charts have something to show
        when = email.utils.format_datetime(now - timedelta(hours=0 if n % 2 else n * 6 + n % 5))
        headers = [
            (
                name,
                value.replace("8.8.4.4", f"45.33.7.{n % 5 + 1}").replace(
                    "Mon, 1 Jun 2026 09:59:00 +0000", when
                ),
            )
            for name, value in JUNK_HEADERS
        ]
        junk = message([("X-N", str(n)), *headers])
        out.append(
            f"Date: {when}\r\n".encode()
            + arf("abuse", junk, fields=[("Source-IP", f"45.33.7.{n % 5 + 1}")]).replace(
                b"fbl@isp.example", f"fbl@isp{n % 4}.example".encode()
            )
        )
    return out


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("browser")
    database = f"sqlite:///{tmp / 'store.sqlite3'}"
    spool = tmp / "spool"
    spool.mkdir()
    for index, raw in enumerate(recent_reports(24) + [forward([hostile_junk(n)]) for n in range(2)]):
        (spool / f"{index}.eml").write_bytes(raw)
    done = cli(database, "ingest", "--quiet", str(spool))
    assert done.returncode == 0, done.stderr
    server = Console(tmp, database)
    yield server
    server.stop()


def log_in(page: Page, token: str) -> None:
    from selenium.webdriver.common.by import By

    page.open("/offenders", status=401)  # not logged in: the login page, and back here afterwards
    assert page.driver.title.startswith("Log in")  # type: ignore[attr-defined]
    page.shot("console-login")
    page.driver.find_element(By.ID, "token").send_keys(token)  # type: ignore[attr-defined]
    page.follow(page.driver.find_element(By.CSS_SELECTOR, "form.login button"))  # type: ignore[attr-defined]
    assert page.driver.title.startswith("Offenders")  # type: ignore[attr-defined]


def test_an_analyst_walks_the_console(console: Console, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    with chromium(console.base, tmp_path) as page:
        driver = page.driver
        log_in(page, console.tokens["analyst"])
        page.open("/")
        bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")  # type: ignore[attr-defined]
        assert len(bars) >= 168 and any(float(bar.get_attribute("height")) > 0 for bar in bars)
        page.shot("console-overview")
        page.follow(driver.find_element(By.LINK_TEXT, "Offenders"))  # type: ignore[attr-defined]
        first = driver.find_element(By.CSS_SELECTOR, "table.offenders td.key a")  # type: ignore[attr-defined]
        key = first.text
        page.shot("console-offenders")
        page.follow(first)
        assert key in driver.find_element(By.TAG_NAME, "h1").text  # type: ignore[attr-defined]
        assert driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")  # type: ignore[attr-defined]
        page.shot("console-offender")
        page.follow(driver.find_element(By.CSS_SELECTOR, "main table a[href^='/reports/']"))  # type: ignore[attr-defined]
        assert driver.find_elements(By.CSS_SELECTOR, "tr.boundary")  # type: ignore[attr-defined]
        page.shot("console-report")
        download = driver.find_element(By.CSS_SELECTOR, "a[download]")  # type: ignore[attr-defined]
        download.click()
        deadline = time.monotonic() + 30
        while not list(page.downloads.glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.2)
        saved = list(page.downloads.glob("*.eml"))
        assert saved, "the download did not arrive"
        report_id = saved[0].stem
        status, _, original = console.get(f"/api/v1/reports/{report_id}/raw", console.tokens["analyst"])
        assert status == 200 and saved[0].read_bytes() == original and b"multipart/report" in original
        page.check()
        search = driver.find_element(By.CSS_SELECTOR, "form.search input")  # type: ignore[attr-defined]
        search.send_keys("45.33.7.0/24")
        page.follow(search, submit=True)
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.offenders td.key a")) == 5  # type: ignore[attr-defined]


def test_hostile_mail_runs_no_script_and_breaks_no_layout(console: Console, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    detail = console.json("/api/v1/offenders/from_domain/xss-1.example.com", "analyst")
    with chromium(console.base, tmp_path) as page:
        log_in(page, console.tokens["analyst"])
        paths = [
            "/",
            "/offenders?by=from_domain",
            "/offenders?by=url_domain",
            "/offenders/from_domain/xss-1.example.com",
        ]
        paths += [f"/reports/{r['report_id']}" for r in detail["latest_reports"]]
        paths += ["/search?q=xss-1.example.com", "/deadletters"]
        for path in paths:
            page.open(path)
            assert page.driver.find_element(By.TAG_NAME, "h1").text  # type: ignore[attr-defined]
            wide = page.driver.execute_script(  # type: ignore[attr-defined]
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert wide <= 40, (path, wide)  # 10,000-character lines wrap inside the page
        page.open(f"/reports/{detail['latest_reports'][0]['report_id']}")
        assert "window.pwned=1" in page.driver.find_element(By.CSS_SELECTOR, "pre.raw").text  # type: ignore[attr-defined]
        page.shot("console-hostile-report")


def test_a_viewer_sees_aggregates_only(console: Console, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    with chromium(console.base, tmp_path) as page:
        log_in(page, console.tokens["viewer"])
        page.open("/offenders/ip/45.33.7.1")
        assert not page.driver.find_elements(By.CSS_SELECTOR, "a[href^='/reports/']")  # type: ignore[attr-defined]
        page.open("/deadletters", status=403)
        assert "403" in page.driver.find_element(By.TAG_NAME, "h1").text  # type: ignore[attr-defined]


def test_an_admin_sees_the_blocked_senders_and_the_review_queue(console: Console, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    listed = console.json("/api/v1/blocklist?state=listed", "viewer")
    assert any(row["kind"] == "ip" and row["key"].startswith("45.33.7.") for row in listed)
    with chromium(console.base, tmp_path) as page:
        log_in(page, console.tokens["admin"])
        page.follow(page.driver.find_element(By.LINK_TEXT, "Blocked senders"))  # type: ignore[attr-defined]
        rows = page.driver.find_elements(By.CSS_SELECTOR, "main table tbody tr")  # type: ignore[attr-defined]
        assert len(rows) == len(listed)
        page.shot("console-blocklist")
        page.follow(page.driver.find_element(By.CSS_SELECTOR, "main table td.key a"))  # type: ignore[attr-defined]
        history = page.driver.find_element(By.CSS_SELECTOR, "main table").text  # type: ignore[attr-defined]
        assert "listed" in history and "policy" in history
        twin = page.driver.find_element(By.CSS_SELECTOR, "a.twin").get_attribute("href")  # type: ignore[attr-defined]
        assert console.json(urllib.parse.urlsplit(twin).path)["key"] in {row["key"] for row in listed}
        page.open("/blocklist/requests")
        assert page.driver.find_element(By.TAG_NAME, "h1").text == "Delisting requests"  # type: ignore[attr-defined]
