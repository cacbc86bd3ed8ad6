"""The console and API through a real `abusepipe serve` process: the contract (401/403, documents equal
to the CLI's JSON), paging, CSV export, audit rows, sessions with CSRF, login throttling, security
headers, hostile mail escaped, and bad requests answered 400 with one line of JSON."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from sinks.kinds import KINDS
from tests.conftest import ROOT, SAMPLES
from tests.console import CMD, Console, cli
from tests.mail import XSS, forward, hostile_junk, junk


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    database = f"sqlite:///{tmp / 'store.sqlite3'}"
    spool = tmp / "spool"
    spool.mkdir()
    for index, raw in enumerate([forward([hostile_junk(n)]) for n in range(3)] + [hostile_junk(9)]):
        (spool / f"hostile-{index}.eml").write_bytes(raw)
    (spool / f"{XSS.replace('/', '_')}.eml").write_bytes(b"Subject: not a report\r\n\r\nhello\r\n")
    done = cli(database, "ingest", "--quiet", str(SAMPLES), str(spool))
    assert done.returncode == 0, done.stderr
    trap = cli(database, "ingest", "--quiet", "--trap", str(spool / "hostile-3.eml"))
    assert trap.returncode == 0, trap.stderr
    server = Console(tmp, database)
    yield server
    server.stop()


def cli_json(console: Console, *args: str) -> object:
    done = cli(console.database, *args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_healthz_is_the_only_anonymous_page(console: Console) -> None:
    assert console.get("/healthz")[0] == 200
    for path in ("/api/v1/offenders?by=ip", "/api/v1/overview", "/api/v1/openapi.json", "/", "/offenders"):
        status, headers, body = console.get(path)
        assert status == 401, path
        if path.startswith("/api/"):
            assert json.loads(body) == {
                "error": "authentication required: Authorization: Bearer <token>, or log in"
            }
            assert headers["www-authenticate"].startswith("Bearer")
    assert console.get("/api/v1/offenders?by=ip", "abp_1_notthetokenatallnotthetokenatall")[0] == 401
    assert console.get("/api/v1/offenders?by=ip", "garbage")[0] == 401


def test_roles(console: Console) -> None:
    viewer, analyst = console.tokens["viewer"], console.tokens["analyst"]
    report_id = cli_json(console, "offenders", "--by", "ip")[0]  # type: ignore[index]
    assert report_id
    detail = console.json(f"/api/v1/offenders/ip/{report_id['key']}", "viewer")  # type: ignore[index]
    any_report = detail["latest_reports"][0]["report_id"]
    assert all(row["reporter"] is None for row in detail["latest_reports"])  # personal data
    assert console.get(f"/api/v1/reports/{any_report}", viewer)[0] == 403
    assert console.get(f"/api/v1/reports/{any_report}/raw", viewer)[0] == 403
    assert console.get("/api/v1/deadletters", viewer)[0] == 403
    assert console.get("/api/v1/offenders?by=ip&format=csv", viewer)[0] == 403
    assert console.get("/api/v1/tokens", analyst)[0] == 403
    status, _, body = console.get(f"/api/v1/reports/{any_report}", analyst)
    assert status == 200 and json.loads(body)["report_id"] == any_report
    assert console.get("/api/v1/openapi.json", viewer)[0] == 200


def test_documents_equal_the_clis(console: Console) -> None:
    for kind in KINDS:
        for extra in ([], ["--sort", "reporters"], ["--top", "3"], ["--since", "3650d"]):
            query = "&".join(f"{a.strip('-')}={b}" for a, b in zip(extra[::2], extra[1::2], strict=True))
            api = console.json(f"/api/v1/offenders?by={kind}&{query}", "viewer")
            assert api == cli_json(console, "offenders", "--by", kind, *extra), (kind, extra)
    top = cli_json(console, "offenders", "--by", "ip")
    for row in top:  # type: ignore[attr-defined]
        key = urllib.parse.quote(row["key"], safe="")
        assert console.json(f"/api/v1/offenders/ip/{key}", "analyst") == cli_json(
            console, "offender", "ip", row["key"]
        )
        for report in console.json(f"/api/v1/offenders/ip/{key}", "analyst")["latest_reports"][:2]:
            api_report = console.json(f"/api/v1/reports/{report['report_id']}", "analyst")
            done = cli(console.database, "report", report["report_id"])
            assert api_report == json.loads(done.stdout)
    network = cli_json(console, "offenders", "--by", "network")[0]  # type: ignore[index]
    assert console.json(f"/api/v1/offenders/network/{network['key']}") == cli_json(
        console, "offender", "network", network["key"]
    )
    assert console.json("/api/v1/deadletters", "analyst") == cli_json(console, "deadletter", "list")


def test_paging_csv_export_raw_download_and_the_audit(console: Console) -> None:
    analyst = console.tokens["analyst"]
    everything = console.json("/api/v1/offenders?by=url_domain&top=50", "analyst")
    assert len(everything) >= 4
    pages = [console.json(f"/api/v1/offenders?by=url_domain&top=2&offset={o}", "analyst") for o in (0, 2)]
    assert pages[0] + pages[1] == everything[:4]
    status, headers, body = console.get("/api/v1/offenders?by=url_domain&top=50&format=csv", analyst)
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert headers["content-disposition"] == 'attachment; filename="offenders-url_domain.csv"'
    lines = body.decode().splitlines()
    assert (
        lines[0] == "kind,key,reports,reporters,all_reports,first_seen,last_seen"
        and len(lines) == len(everything) + 1
    )
    report_id = (
        everything[0]
        and console.json(f"/api/v1/offenders/url_domain/{everything[0]['key']}", "analyst")["latest_reports"][
            0
        ]["report_id"]
    )
    status, headers, raw = console.get(f"/api/v1/reports/{report_id}/raw", analyst)
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"] == f'attachment; filename="{report_id}.eml"'
    done = subprocess.run(
        [*CMD, "report", report_id, "--raw", "--database", console.database],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert raw == done.stdout
    audit = console.json("/api/v1/audit", "admin")
    actions = [(entry["actor"], entry["action"]) for entry in audit]
    assert ("test-analyst", "export") in actions and ("test-analyst", "raw-view") in actions
    cli_audit = cli_json(console, "audit")
    assert [e["action"] for e in cli_audit] == [e["action"] for e in audit]  # type: ignore[union-attr]


def test_tokens_created_revoked_and_expired(console: Console) -> None:
    admin = console.tokens["admin"]
    request = urllib.request.Request(
        console.base + "/api/v1/tokens",
        data=json.dumps({"name": "ticketing", "role": "viewer", "expires": "1d"}).encode(),
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        created = json.loads(response.read())
    assert response.status == 201 and created["token"].startswith("abp_")
    assert console.get("/api/v1/overview", created["token"])[0] == 200
    listed = {t["name"]: t for t in console.json("/api/v1/tokens")}
    assert listed["ticketing"]["state"] == "active" and "token" not in listed["ticketing"]
    revoke = urllib.request.Request(
        console.base + "/api/v1/tokens/ticketing",
        headers={"Authorization": f"Bearer {admin}"},
        method="DELETE",
    )
    with urllib.request.urlopen(revoke) as response:
        assert json.loads(response.read())["state"] == "revoked"
    assert console.get("/api/v1/overview", created["token"])[0] == 401
    done = cli(console.database, "token", "revoke", "nobody-by-that-name")
    assert done.returncode == 3
    assert {"token-create", "token-revoke"} <= {e["action"] for e in console.json("/api/v1/audit")}
    stored = (Path(console.database.removeprefix("sqlite:///"))).read_bytes()
    assert created["token"].split("_", 2)[2].encode() not in stored  # kept hashed only


class Browser:
    """A cookie-keeping HTTP client: what a browser does with the session cookie."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def request(
        self, path: str, form: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def test_sessions_cookies_csrf_and_login_throttling(console: Console) -> None:
    browser = Browser(console.base)
    status, headers, _ = browser.request(
        "/login", {"token": console.tokens["admin"], "next": "//evil.example/x"}
    )
    assert status == 303 and headers["location"] == "/"  # never an open redirect
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    status, _, page = browser.request("/admin/tokens")
    assert status == 200
    assert browser.request("/admin/tokens", {"name": "nocsrf", "role": "viewer"})[0] == 403
    status, _, created = browser.request(
        "/admin/tokens", {"name": "withcsrf", "role": "viewer", "csrf": csrf_of(page)}
    )
    assert status == 201 and "abp_" in created
    foreign = {"name": "cross", "role": "viewer", "csrf": csrf_of(page)}
    assert browser.request("/admin/tokens", foreign, Origin="https://evil.example")[0] == 403
    assert browser.request("/logout", {"csrf": csrf_of(page)})[0] == 303
    assert browser.request("/admin/tokens")[0] == 401  # the session ended
    stranger = Browser(console.base)
    for _ in range(10):
        assert stranger.request("/login", {"token": "abp_1_wrongwrongwrongwrongwrong"})[0] == 401
    assert stranger.request("/login", {"token": console.tokens["viewer"]})[0] == 429


def test_security_headers(console: Console) -> None:
    for path in ("/healthz", "/", "/api/v1/overview", "/login", "/static/console.css", "/api/v1/nothing"):
        _, headers, _ = console.get(path, console.tokens["viewer"])
        assert "script-src" not in headers["content-security-policy"]
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


def test_hostile_mail_is_escaped_everywhere(console: Console) -> None:
    analyst = console.tokens["analyst"]
    pages = [
        "/",
        "/offenders?by=from_domain&since=3650d",
        "/offenders?by=url_domain",
        "/deadletters",
        "/search?q=xss-1.example.com",
    ]
    for kind, key in (("from_domain", "xss-1.example.com"), ("url_domain", "example.com"), ("ip", "8.8.4.2")):
        pages.append(f"/offenders/{kind}/{key}")
        detail = console.json(f"/api/v1/offenders/{kind}/{key}", "analyst")
        pages += [f"/reports/{r['report_id']}" for r in detail["latest_reports"][:3]]
    pages += [f"/deadletters/{row['id']}" for row in console.json("/api/v1/deadletters", "analyst")]
    for path in pages:
        status, _, body = console.get(path, analyst)
        text = body.decode()
        assert status == 200, (path, text[:300])
        assert not re.search(r"<script|<img", text, re.IGNORECASE), path
    report_page = console.get(pages[6], analyst)[2].decode()
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in report_page


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/offenders?by=nonsense",
        "/api/v1/offenders?by=ip&top=100000",
        "/api/v1/offenders?by=ip&top=0",
        "/api/v1/offenders?by=ip&offset=-1",
        "/api/v1/offenders?by=ip&since=yesterday-ish",
        "/api/v1/offenders?by=ip&since=2026-13-45",
        "/api/v1/offenders?by=ip&sort=loudest",
        "/api/v1/offenders/nonsense/1.2.3.4",
        "/api/v1/offenders/ip/1.2.3.4?days=-5",
        "/api/v1/search?q=10.0.0.0/99",
        "/api/v1/search?q=%20",
        "/api/v1/search?q=not%20a%20thing%20%3C%3E",
        "/api/v1/deadletters/notanumber",
        "/api/v1/deadletters?limit=999999",
    ],
)
def test_bad_requests_are_400_with_one_line(console: Console, path: str) -> None:
    status, headers, body = console.get(path, console.tokens["analyst"])
    assert status == 400, (path, body)
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert (
        list(document) == ["error"] and "\n" not in document["error"] and "Traceback" not in document["error"]
    )


def test_not_found_is_404(console: Console) -> None:
    for path in (
        "/api/v1/reports/" + "0" * 32,
        "/api/v1/offenders/ip/192.0.2.250",
        "/api/v1/deadletters/999999",
    ):
        status, _, body = console.get(path, console.tokens["analyst"])
        assert status == 404 and "error" in json.loads(body)


def twin_of(console: Console, path: str) -> Any:
    """The document the page's JSON link leads to."""
    status, _, body = console.get(path, console.tokens["admin"])
    assert status == 200, (path, status)
    match = re.search(r'<a class="twin" href="([^"]+)"', body.decode())
    assert match, path
    return console.json(html.unescape(match.group(1)))


def test_every_page_links_its_json_twin(console: Console) -> None:
    for kind in ("ip", "network", "from_domain"):
        key = cli_json(console, "offenders", "--by", kind)[0]["key"]  # type: ignore[index]
        quoted = urllib.parse.quote(key, safe="")
        assert twin_of(console, f"/offenders/{kind}/{quoted}") == console.json(
            f"/api/v1/offenders/{kind}/{quoted}"
        )


def test_search(console: Console) -> None:
    ip = console.json("/api/v1/search?q=8.8.4.2", "analyst")
    assert ip["kind"] == "ip" and ip["offenders"][0]["key"] == "8.8.4.2"
    cidr = console.json("/api/v1/search?q=8.8.4.0/29", "analyst")
    assert {row["key"] for row in cidr["offenders"]} >= {"8.8.4.1", "8.8.4.2", "8.8.4.3"}
    domain = console.json("/api/v1/search?q=XSS-1.example.com", "analyst")
    assert {row["kind"] for row in domain["offenders"]} >= {"from_domain", "url_domain"}
    report_id = (
        domain and console.json("/api/v1/offenders/ip/8.8.4.2", "analyst")["latest_reports"][0]["report_id"]
    )
    assert console.json(f"/api/v1/search?q={report_id}", "analyst")["reports"][0]["report_id"] == report_id
    message_id = console.json(f"/api/v1/reports/{report_id}", "analyst")["original"]["message_id"]
    found = console.json("/api/v1/search?q=" + urllib.parse.quote(f"<{message_id}>"), "analyst")
    assert found["kind"] == "message_id" and found["reports"]
    assert console.json("/api/v1/search?q=8.8.4.2", "viewer")["offenders"]
    assert console.json(f"/api/v1/search?q={report_id}", "viewer")["reports"] == []


def test_junk_is_recognised(console: Console) -> None:
    assert junk()  # the samples the console serves include plain forwards too
