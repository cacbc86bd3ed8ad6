"""A real headless Chromium (Debian's, with its ChromeDriver, through Selenium with an explicit driver
path: Selenium Manager never downloads anything) that fails the test on any console error or CSP
violation the page caused."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCREENSHOTS = os.environ.get("ABUSEPIPE_SCREENSHOTS")
"""A directory to keep screenshots in (README's are made this way); unset: none are kept."""


def chromium_paths() -> tuple[str, str]:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "chromium")], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: scripts/chromium failed: {done.stderr.strip()}")
        pytest.skip(f"no Chromium: {done.stderr.strip()}")
    browser, driver = done.stdout.split()
    return browser, driver


class Page:
    """The browser, with the console and CSP checks after every step."""

    def __init__(self, driver: object, base: str, downloads: Path) -> None:
        self.driver = driver
        self.base = base
        self.downloads = downloads
        self.problems: list[str] = []

    def open(self, path: str, *, status: int = 200) -> None:
        """Go to `path`; `status`: the one the page itself answers with on purpose (the login page's 401,
        a forbidden page's 403), which Chromium reports as a failed resource."""
        self.driver.get(self.base + path)  # type: ignore[attr-defined]
        self.check(
            expected=f"{self.base}{path} - Failed to load resource: the server responded with a status of {status}"
            if status != 200
            else None
        )

    def follow(self, element: object, *, expected: str | None = None, submit: bool = False) -> None:
        """Click `element` (or submit its form) and wait for the page it leads to: a click returns before
        the navigation it starts ends, so reading the page straight after it reads the old one.

        The old document is marked and the wait is for a complete document without the mark. (Waiting
        for an element of the old one to go stale raced: while Chromium swaps documents, asking about it
        can fail with an inspector error instead of the stale-element one.)"""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.wait import WebDriverWait

        def arrived(driver: object) -> bool:
            try:
                return bool(
                    driver.execute_script(  # type: ignore[attr-defined]
                        "return window.abusepipeLeft === undefined && document.readyState === 'complete'"
                    )
                )
            except WebDriverException:
                return False  # between two documents: no script can run yet

        self.driver.execute_script("window.abusepipeLeft = true")  # type: ignore[attr-defined]
        if submit:
            element.submit()  # type: ignore[attr-defined]
        else:
            element.click()  # type: ignore[attr-defined]
        WebDriverWait(self.driver, 30).until(arrived)
        self.check(expected=expected)

    def check(self, *, expected: str | None = None) -> None:
        """No console error and no CSP violation so far, and no injected script ran."""
        for entry in self.driver.get_log("browser"):  # type: ignore[attr-defined]
            message = str(entry.get("message", ""))
            if expected is not None and message.startswith(expected):
                continue
            if (
                entry.get("level") == "SEVERE"
                or "Content Security Policy" in message
                or "Refused to" in message
            ):
                self.problems.append(message)
        assert not self.problems, self.problems
        assert self.driver.execute_script("return window.pwned === undefined"), "an injected script ran"  # type: ignore[attr-defined]

    def shot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))  # type: ignore[attr-defined]


@contextmanager
def chromium(base: str, tmp: Path) -> Iterator[Page]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    downloads = tmp / "downloads"
    downloads.mkdir(exist_ok=True)
    options = Options()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-quic",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp / 'profile'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield Page(driver, base, downloads)
    finally:
        driver.quit()
