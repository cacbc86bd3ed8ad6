"""The blocked-senders list enforced by real components: Debian's rbldnsd serving the exported zone to
dnspython, Postfix's own `postmap` reading the exported cidr table, and Debian's Postfix asking
`abusepipe policy` (a real process, on a real PostgreSQL that the test stops) about every client."""

from __future__ import annotations

import ipaddress
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.conftest import ROOT, OwnService, free_ports

pytestmark = pytest.mark.integration

CMD = [sys.executable, "-m", "abusepipe.cli"]
PORTAL = "https://delist.example.net/"
ZONE = "bl.test"
TENANT = "cba1030d-af07-487f-8f7b-30d91dbfbfeb"


def tool(script: str, *args: str) -> str:
    """A Debian package a script installs (as root) when missing; skipped outside CI without it."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the {script} tests: {done.stderr.strip()}")
        pytest.skip(done.stderr.strip())
    return done.stdout.strip()


class Desk:
    """`abusepipe` commands on one store, as an operator runs them."""

    def __init__(self, database_url: str, home: Path) -> None:
        self.database_url = database_url
        self.home = home

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")},
            "ABUSEPIPE_DATABASE_URL": self.database_url,
            "ABUSEPIPE_PORTAL_URL": PORTAL,
            "ABUSEPIPE_DATA_DIR": str(self.home),
            "PYTHONPATH": str(ROOT),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*CMD, *args], capture_output=True, text=True, timeout=120, env=self.env(), check=False
        )
        assert done.returncode == 0, done.stderr
        return done

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*CMD, *args], stderr=log.open("wb"), env=self.env())


def world_readable_dir() -> Path:
    """rbldnsd reads its zone as the unprivileged `rbldns` user: not from pytest's 0700 directories."""
    path = Path(tempfile.mkdtemp(prefix="abusepipe-rbl-", dir="/tmp"))
    path.chmod(0o755)
    return path


# --- rbldnsd --------------------------------------------------------------------------------------------


def ask(port: int, name: str, rdtype: str) -> tuple[str, list[str]]:
    query = dns.message.make_query(name, rdtype)
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=3)
    answers = [item.to_text() for rrset in reply.answer for item in rrset]
    return dns.rcode.to_text(reply.rcode()), answers


def ip_name(address: str) -> str:
    parsed = ipaddress.ip_address(address)
    if parsed.version == 4:
        return ".".join(reversed(address.split("."))) + f".{ZONE}"
    return ".".join(reversed(parsed.exploded.replace(":", ""))) + f".{ZONE}"


@pytest.fixture
def rbl_dir() -> Iterator[Path]:
    path = world_readable_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_rbldnsd_serves_the_exported_zone(tmp_path: Path, rbl_dir: Path) -> None:
    rbldnsd = tool("rbldnsd")
    desk = Desk(f"sqlite:///{tmp_path / 'store.sqlite3'}", tmp_path)
    for kind, key in [
        ("ip", "192.0.2.7"),
        ("ip", "2001:db8::7"),
        ("network", "198.51.100.0/24"),
        ("from_domain", "spam-shop.example"),
        ("tenant", TENANT),
    ]:
        desk.run("blocklist", "add", kind, key, "--reason", "seen in the test")
    zone = rbl_dir / "abusepipe.zone"
    desk.run("blocklist", "export", "--format", "rbldnsd", "--output", str(zone))
    port = free_ports(1)
    log = tmp_path / "rbldnsd.log"
    process = subprocess.Popen(
        [
            rbldnsd,
            "-n",
            "-u",
            "rbldns",
            "-c",
            "1",
            "-b",
            f"127.0.0.1/{port}",
            "-w",
            str(rbl_dir),
            f"{ZONE}:combined:{zone.name}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if ask(port, f"test.{ZONE}", "A")[0] == "NOERROR":
                    break
            except dns.exception.Timeout:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

        rcode, answers = ask(port, ip_name("192.0.2.7"), "A")
        assert (rcode, answers) == ("NOERROR", ["127.0.0.2"])
        rcode, answers = ask(port, ip_name("192.0.2.7"), "TXT")
        assert answers == [f'"Listed by abusepipe (manual). To request removal visit {PORTAL}?ip=192.0.2.7"']
        assert ask(port, ip_name("2001:db8::7"), "A") == ("NOERROR", ["127.0.0.2"])
        assert "2001:db8::7" in ask(port, ip_name("2001:db8::7"), "TXT")[1][0]
        assert ask(port, ip_name("198.51.100.201"), "A") == ("NOERROR", ["127.0.0.2"])
        assert ask(port, f"spam-shop.example.{ZONE}", "A") == ("NOERROR", ["127.0.0.2"])
        assert PORTAL in ask(port, f"spam-shop.example.{ZONE}", "TXT")[1][0]
        assert ask(port, f"{TENANT}.tenant.{ZONE}", "A") == ("NOERROR", ["127.0.0.2"])
        # RFC 5782 section 5: the test entries are listed, their neighbours are not
        for listed in (ip_name("127.0.0.2"), ip_name("::ffff:7f00:2"), f"test.{ZONE}"):
            assert ask(port, listed, "A") == ("NOERROR", ["127.0.0.2"]), listed
            assert ask(port, listed, "TXT")[1], listed
        for unlisted in (
            ip_name("127.0.0.1"),
            ip_name("::ffff:7f00:1"),
            f"invalid.{ZONE}",
            ip_name("192.0.2.8"),
            ip_name("2001:db8::8"),
            ip_name("198.51.101.1"),
            f"other-shop.example.{ZONE}",
        ):
            assert ask(port, unlisted, "A") == ("NXDOMAIN", []), unlisted

        # A delisting reaches the zone: the file is rewritten (only when it changed), rbldnsd reloads.
        before = zone.stat().st_mtime_ns
        desk.run("blocklist", "export", "--format", "rbldnsd", "--output", str(zone))
        assert zone.stat().st_mtime_ns == before
        desk.run("blocklist", "remove", "ip", "192.0.2.7", "--reason", "fixed")
        time.sleep(1.1)  # rbldnsd compares modification times in whole seconds
        desk.run("blocklist", "export", "--format", "rbldnsd", "--output", str(zone))
        assert zone.stat().st_mtime_ns != before
        deadline = time.monotonic() + 15
        while ask(port, ip_name("192.0.2.7"), "A")[0] != "NXDOMAIN":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert ask(port, ip_name("2001:db8::7"), "A") == ("NOERROR", ["127.0.0.2"])
    finally:
        process.terminate()
        process.wait(10)


def test_postfix_reads_the_exported_cidr_table(tmp_path: Path) -> None:
    tool("postfix", "install")
    desk = Desk(f"sqlite:///{tmp_path / 'store.sqlite3'}", tmp_path)
    for kind, key in [("ip", "192.0.2.7"), ("ip", "2001:db8::7"), ("network", "198.51.100.0/24")]:
        desk.run("blocklist", "add", kind, key, "--reason", "seen in the test")
    table = tmp_path / "abusepipe.cidr"
    desk.run("blocklist", "export", "--format", "postfix", "--output", str(table))

    config = tmp_path / "postfix"  # postmap reads a main.cf; Debian's is not there before setup
    config.mkdir()
    (config / "main.cf").write_text("compatibility_level = 3.6\n")

    def lookup(address: str) -> str | None:
        done = subprocess.run(
            ["postmap", "-c", str(config), "-q", address, f"cidr:{table}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode in (0, 1) and not done.stderr, done.stderr
        return done.stdout.strip() if done.returncode == 0 else None

    assert lookup("192.0.2.7") == (
        "550 5.7.606 Access denied, banned sending IP [192.0.2.7]. To request removal from this list "
        f"please visit {PORTAL} and follow the directions."
    )
    assert lookup("2001:db8::7") is not None and "[2001:db8::7]" in (lookup("2001:db8::7") or "")
    assert "[198.51.100.0/24]" in (lookup("198.51.100.99") or "")
    assert lookup("192.0.2.8") is None
    assert lookup("2001:db8::8") is None


# --- Postfix and the policy server ----------------------------------------------------------------------


class Postfix:
    def __init__(self, policy: str) -> None:
        self.port = free_ports(1)
        directory = f"/tmp/abusepipe-postfix-test-{self.port}"
        env = {
            **os.environ,
            "ABUSEPIPE_POSTFIX_PORT": str(self.port),
            "ABUSEPIPE_POSTFIX_DIR": directory,
            "ABUSEPIPE_POSTFIX_POLICY": policy,
        }
        self.service = OwnService("postfix", env, "ABUSEPIPE_POSTFIX_DIR")
        self.maillog = Path(directory) / "maillog"

    def send(self, source: str) -> tuple[int, str]:
        """Mail from `source` (a 127.0.0.x address); (250, "") when accepted, else the refusal."""
        try:
            with smtplib.SMTP("127.0.0.1", self.port, source_address=(source, 0), timeout=30) as smtp:
                smtp.sendmail("a@sender.example", ["u@test.example"], b"Subject: hi\r\n\r\nhello\r\n")
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients["u@test.example"]
            return code, text.decode()
        return 250, ""


@pytest.fixture
def postfix_for() -> Iterator[type[Postfix]]:
    tool("postfix", "install")
    started: list[Postfix] = []

    class Started(Postfix):
        def __init__(self, policy: str) -> None:
            super().__init__(policy)
            started.append(self)

    yield Started
    for instance in started:
        instance.service.remove()


def wait_for_log(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)


def eventually(check: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_postfix_refuses_a_listed_client_through_the_policy_server(
    own_postgres: tuple[str, OwnService], postfix_for: type[Postfix], tmp_path: Path
) -> None:
    url, database = own_postgres
    desk = Desk(url, tmp_path)
    desk.run("blocklist", "add", "ip", "127.0.0.9", "--reason", "listed by hand for the test")
    policy_port = free_ports(1)
    policy_log = tmp_path / "policy.log"
    policy = desk.start("policy", "--listen", f"127.0.0.1:{policy_port}", "--refresh", "1", log=policy_log)
    try:
        wait_for_log(policy_log, "policy server on", policy)
        postfix = postfix_for(f"127.0.0.1:{policy_port}")

        code, text = postfix.send("127.0.0.9")
        assert code == 550
        assert "5.7.606 " in text
        assert (
            "Access denied, banned sending IP [127.0.0.9]. To request removal from this list please visit "
            f"{PORTAL} and follow the directions." in text
        )
        assert postfix.send("127.0.0.10") == (250, "")

        desk.run("blocklist", "remove", "ip", "127.0.0.9", "--reason", "the sender fixed it")
        eventually(lambda: postfix.send("127.0.0.9") == (250, ""))

        desk.run("blocklist", "add", "ip", "127.0.0.11", "--reason", "listed before the outage")
        eventually(lambda: postfix.send("127.0.0.11")[0] == 550)
        database("stop")  # the store goes away: mail still flows, the listings still hold
        wait_for_log(policy_log, "the store cannot be read", policy)
        assert postfix.send("127.0.0.10") == (250, "")
        assert postfix.send("127.0.0.11")[0] == 550
    finally:
        policy.terminate()
        assert policy.wait(30) == 0, policy_log.read_text()
    assert "Traceback" not in policy_log.read_text()

    # Started while the store is down: no snapshot at all. Fail open by default, 451 when told so.
    for flags, expected in (((), 250), (("--fail-closed",), 451)):
        log = tmp_path / f"policy{len(flags)}.log"
        again = desk.start("policy", "--listen", f"127.0.0.1:{policy_port}", *flags, log=log)
        try:
            wait_for_log(log, "no listings loaded yet", again)
            assert postfix.send("127.0.0.11")[0] == expected
        finally:
            again.terminate()
            again.wait(30)
    database("resume")
