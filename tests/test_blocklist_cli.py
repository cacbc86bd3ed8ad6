"""`abusepipe blocklist ...` as an operator runs it (the contract of DESIGN.md), and the export formats."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from blocklist.export import Entry, render, write_if_changed
from tests.conftest import ROOT
from tests.mail import JUNK_HEADERS, arf, junk

CMD = [sys.executable, "-m", "abusepipe.cli"]
PORTAL = "https://delist.example.net/"


class Operator:
    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.tmp = tmp_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")},
            "ABUSEPIPE_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
            "ABUSEPIPE_PORTAL_URL": PORTAL,
            "PYTHONPATH": str(ROOT),
            **settings,
        }

    def __call__(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CMD, *args],
            input=stdin.decode("latin-1"),
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            check=False,
        )

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    def listed(self) -> list[dict[str, object]]:
        return json.loads(self.ok("blocklist", "list", "--state", "listed", "--format", "json"))  # type: ignore[no-any-return]


def reports(tmp_path: Path, ip: str, reporters: int, *, at: datetime) -> list[Path]:
    paths = []
    for i in range(reporters):
        original = junk(
            headers=[
                (n, v.replace("8.8.4.4", ip).replace("junk-1@", f"junk-{ip}-{i}@")) for n, v in JUNK_HEADERS
            ]
        )
        raw = arf("abuse", original, fields=[("Source-IP", ip)]).replace(
            b"fbl@isp.example", f"r{i}@isp{i}.example".encode()
        )
        path = tmp_path / f"{ip}-{i}.eml"
        path.write_bytes(f"Date: {format_datetime(at)}\r\n".encode() + raw)
        paths.append(path)
    return [*paths]


def test_ingest_lists_and_the_contract_commands_show_it(tmp_path: Path) -> None:
    run = Operator(tmp_path)
    now = datetime.now(UTC)
    run.ok("ingest", *map(str, reports(tmp_path, "45.33.20.1", 3, at=now)))
    listed = run.listed()
    assert [(x["kind"], x["key"], x["state"]) for x in listed] == [("ip", "45.33.20.1", "listed")]
    assert set(listed[0]) >= {"kind", "key", "state", "listed_at", "expires_at", "reason"}
    assert datetime.fromisoformat(str(listed[0]["expires_at"])) > now + timedelta(hours=23)

    shown = json.loads(run.ok("blocklist", "show", "ip", "45.33.20.1", "--format", "json"))
    assert shown["state"] == "listed"
    assert shown["evidence"]["reporters"] == 3
    assert [e["event"] for e in shown["history"]] == ["listed"]
    assert "isp0.example" not in json.dumps(shown)  # counts, never who reported it
    text = run.ok("blocklist", "show", "ip", "45.33.20.1")
    assert "3 distinct reporters" in text and "history:" in text

    out = run.ok("blocklist", "remove", "ip", "45.33.20.1", "--reason", "sender cleaned up")
    assert out.startswith("delisted-by-analyst ip 45.33.20.1")
    assert run.listed() == []
    every = json.loads(run.ok("blocklist", "list", "--format", "json"))
    assert [x["state"] for x in every] == ["delisted"]
    assert (
        json.loads(run.ok("blocklist", "list", "--state", "delisted", "--format", "json"))[0]["key"]
        == "45.33.20.1"
    )


def test_manual_add_with_ttl_and_remove(tmp_path: Path) -> None:
    run = Operator(tmp_path)
    out = run.ok("blocklist", "add", "ip", "203.0.113.5", "--reason", "seen on our own traps", "--ttl", "7d")
    assert out.startswith("listed ip 203.0.113.5 until ")
    [listing] = run.listed()
    expires = datetime.fromisoformat(str(listing["expires_at"]))
    assert timedelta(days=7) - timedelta(minutes=1) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert listing["reason"] == "seen on our own traps"
    run.ok("blocklist", "add", "network", "198.51.100.77/24", "--reason", "whole block")
    assert {x["key"] for x in run.listed()} == {"203.0.113.5", "198.51.100.0/24"}
    run.ok("blocklist", "add", "tenant", "CBA1030D-AF07-487F-8F7B-30D91DBFBFEB", "--reason", "junk tenant")
    assert "cba1030d-af07-487f-8f7b-30d91dbfbfeb" in {x["key"] for x in run.listed()}
    not_listed = run("blocklist", "remove", "ip", "203.0.113.6", "--reason", "x")
    assert not_listed.returncode == 3
    assert not_listed.stderr.strip() == "abusepipe: error: ip 203.0.113.6 is not listed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "ip", "300.1.1.1", "--reason", "x"), "'300.1.1.1' is not an IP address"),
        (("add", "network", "10.0.0.0/2", "--reason", "x"), "wider than /8"),
        (("add", "tenant", "not-a-guid", "--reason", "x"), "is not a tenant id"),
        (("add", "from_domain", "a b.example", "--reason", "x"), "is not a domain name"),
        (("add", "ip", "192.0.2.1", "--reason", "x", "--ttl", "7"), "give a number and a unit"),
        (("add", "ip", "192.0.2.1", "--reason", " "), "needs a reason"),
        (("add", "from_domain", "gmail.com", "--reason", "x"), "a shared domain"),
        (("add", "ip", "40.107.20.107", "--reason", "x"), "shared platform"),
        (("export", "--format", "rbldnsd", "--watch"), "--watch needs --output"),
    ],
)
def test_bad_arguments_get_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = Operator(tmp_path)("blocklist", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_bad_settings_get_one_line(tmp_path: Path) -> None:
    done = Operator(tmp_path, ABUSEPIPE_BLOCKLIST_KINDS="ip,asn")("blocklist", "evaluate")
    assert done.returncode == 2
    assert "unknown kind 'asn'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_evaluate_dry_run_shows_the_diff_and_changes_nothing(tmp_path: Path) -> None:
    run = Operator(tmp_path, ABUSEPIPE_BLOCKLIST_ENABLED="false")
    now = datetime.now(UTC)
    run.ok("ingest", *map(str, reports(tmp_path, "45.33.21.1", 3, at=now)))
    assert run.listed() == []  # the policy was off when the reports came in
    dry = run("blocklist", "evaluate", "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.startswith("would be listed ip 45.33.21.1 until ")
    assert "1 listing would change" in dry.stderr
    assert run.listed() == []
    done = json.loads(run.ok("blocklist", "evaluate", "--format", "json"))
    assert [(c["event"], c["kind"], c["key"]) for c in done] == [("listed", "ip", "45.33.21.1")]
    assert json.loads(run.ok("blocklist", "evaluate", "--format", "json")) == []
    # a stricter policy (more reporters) keeps what was listed; an allowlist entry delists it
    allowed = Operator(tmp_path, ABUSEPIPE_BLOCKLIST_ALLOW="45.33.21.0/24")
    diff = allowed.ok("blocklist", "evaluate", "--dry-run")
    assert (
        "would be delisted-by-analyst ip 45.33.21.1: the policy no longer lists it: allowed by the operator"
        in diff
    )


def test_export_files_are_written_only_when_changed(tmp_path: Path) -> None:
    run = Operator(tmp_path)
    run.ok("blocklist", "add", "ip", "192.0.2.7", "--reason", "x")
    out = tmp_path / "zones" / "abusepipe.zone"
    out.parent.mkdir()
    first = run("blocklist", "export", "--format", "rbldnsd", "--output", str(out))
    assert first.returncode == 0 and "1 listings" in first.stderr
    stamp = out.stat().st_mtime_ns
    again = run("blocklist", "export", "--format", "rbldnsd", "--output", str(out))
    assert "(unchanged)" in again.stderr and out.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in out.parent.iterdir()) == ["abusepipe.zone"]  # no temporary left
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    for fmt in ("postfix", "plain", "json", "tenants"):
        assert run("blocklist", "export", "--format", fmt).returncode == 0
    assert run.ok("blocklist", "export", "--format", "plain") == "192.0.2.7\n"
    assert json.loads(run.ok("blocklist", "export", "--format", "json"))[0]["key"] == "192.0.2.7"
    missing = run("blocklist", "export", "--format", "plain", "--output", str(tmp_path / "no" / "dir" / "f"))
    assert missing.returncode == 1 and "cannot write in" in missing.stderr


def test_export_watch_follows_changes(tmp_path: Path) -> None:
    run = Operator(tmp_path)
    run.ok("blocklist", "add", "ip", "192.0.2.7", "--reason", "x")
    out = tmp_path / "listed.txt"
    watcher = subprocess.Popen(
        [
            *CMD,
            "blocklist",
            "export",
            "--format",
            "plain",
            "--output",
            str(out),
            "--watch",
            "--interval",
            "0.2",
        ],
        env=run.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_text() == "192.0.2.7\n"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        run.ok("blocklist", "add", "ip", "192.0.2.8", "--reason", "x")
        while out.read_text() != "192.0.2.7\n192.0.2.8\n":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        watcher.terminate()
        _, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert "Traceback" not in err


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def entry(kind: str, key: str, code: str = "reports") -> Entry:
    return Entry(kind, key, code, "why", "policy", NOW.isoformat(), (NOW + timedelta(days=1)).isoformat())


def test_rbldnsd_rendering() -> None:
    text = render(
        "rbldnsd",
        [
            entry("ip", "192.0.2.7"),
            entry("ip", "::ffff:192.0.2.9"),
            entry("network", "2001:db8:1::/48", "network"),
            entry("url_domain", "bücher.example"),
            entry("tenant", "cba1030d-af07-487f-8f7b-30d91dbfbfeb"),
        ],
        "https://portal.example/delist?from=$dns",
    )
    lines = text.splitlines()
    assert "192.0.2.7 reports" in lines
    assert "::ffff:c000:209 reports" in lines  # hex, however Python writes a mapped address
    assert "2001:db8:1::/48 network" in lines
    assert "xn--bcher-kva.example reports" in lines
    assert "$DATASET dnset:abusepipe-tenants tenant" in lines
    assert (
        "$= Listed by abusepipe ($=). To request removal visit https://portal.example/delist?from=$$dns"
        in lines
    )
    assert "127.0.0.2 test" in lines and "::ffff:7f00:2 test" in lines and "test test" in lines


def test_postfix_rendering_quotes_nothing_it_should_not() -> None:
    text = render("postfix", [entry("network", "198.51.100.0/24"), entry("ip", "192.0.2.7")], PORTAL)
    rows = [line for line in text.splitlines() if not line.startswith("#")]
    assert rows[0].startswith("192.0.2.7\t550 5.7.606 Access denied, banned sending IP [192.0.2.7]. ")
    assert rows[1].startswith("198.51.100.0/24\t550 5.7.606 ")
    assert all(ipaddress.ip_network(row.split("\t")[0]) for row in rows)


def test_write_if_changed_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "zone"
    assert write_if_changed(target, b"one\n")
    assert not write_if_changed(target, b"one\n")
    inode = target.stat().st_ino
    assert write_if_changed(target, b"two\n")
    assert target.read_bytes() == b"two\n"
    assert target.stat().st_ino != inode  # replaced by rename, never rewritten in place
