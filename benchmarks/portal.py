"""The delist portal under load, and how soon a delisting reaches the MTA.

    python benchmarks/portal.py [--database URL] [--listings 100000] [--clients 16] [--seconds 30]
                                [--delistings 20] [--workers 2]

PostgreSQL comes from scripts/postgres unless --database names a server; the benchmark makes a fresh
database on it with --listings listings in force (and their history), then runs a real `abusepipe
portal` and a real `abusepipe policy` (default refresh) on it, with a real SMTP server on loopback as
the relay.

1. lookup: --clients concurrent clients (keep-alive, one thread each) ask for the status page of random
   IPs, half of them listed, for --seconds: pages/s and latency p50/p95/p99 as the clients see them.
2. delist: --delistings times, a sender's whole path by HTTP (request, the mailed link, its page, the
   "Delist" form): the time from the POST of the form until `abusepipe policy` answers DUNNO for the IP,
   median and worst; and the time from the request until the mail reached the relay.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from benchmarks.blocklist import CLI, cpu_seconds, fill_listings  # noqa: E402
from benchmarks.oneline import run_main  # noqa: E402
from benchmarks.pipeline import scratch_database, service  # noqa: E402
from tests.conftest import free_ports  # noqa: E402
from tests.smtpsink import SmtpSink  # noqa: E402
from tests.test_policyd import read_reply, request  # noqa: E402


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the portal's workers)."""
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += cpu_seconds(int(stat.parent.name))
    return total


def listed_ip(n: int) -> str:
    """The n-th IP listing `fill_listings` made (n not a multiple of 10: those are networks)."""
    return f"{10 + (n // 65536) % 200}.{(n // 256) % 256}.{n % 256}.{1 + n % 250}"


def fill_history(database: str) -> None:
    engine = create_engine(database)
    with engine.begin() as connection:
        connection.execute(
            text(
                """INSERT INTO listing_events (kind, key, at, event, actor, reason)
                SELECT kind, key, listed_at, 'listed', 'policy', reason FROM listings"""
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE listing_events"))
    engine.dispose()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*CLI, *args], env=env, stderr=log.open("wb"))


def wait_http(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the portal did not start: {log.read_text()}")
        time.sleep(0.2)


def lookups(port: int, pid: int, listings: int, clients: int, seconds: float) -> None:
    results: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        rng = random.Random(index)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            n = rng.randrange(1, listings)
            ip = (
                listed_ip(n)
                if n % 10 and rng.random() < 0.5
                else f"45.{rng.randrange(256)}.{rng.randrange(256)}.9"
            )
            began = time.perf_counter()
            connection.request("GET", "/?" + urllib.parse.urlencode({"ip": ip}))
            response = connection.getresponse()
            body = response.read()
            results[index].append(time.perf_counter() - began)
            if response.status != 200 or b'id="status"' not in body:
                errors[index] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    cpu = tree_cpu(pid)
    own = time.process_time()
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    cpu = tree_cpu(pid) - cpu
    own = time.process_time() - own
    latencies = [x for result in results for x in result]
    print(f"lookup: {listings:,} listings, {clients} clients, {elapsed:.0f} s")
    print(
        f"  {len(latencies) / elapsed:,.0f} pages/s; p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p95 {percentile(latencies, 0.95) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms; "
        f"{sum(errors)} errors"
    )
    print(
        f"  CPU per page: portal {cpu / len(latencies) * 1000:.2f} ms, "
        f"the clients {own / len(latencies) * 1000:.2f} ms (the rest: PostgreSQL, on the same 2 cores)"
    )


def policy_answer(port: int, ip: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request(ip))
        return read_reply(sock)


def delistings(portal: int, policy: int, sink: SmtpSink, count: int) -> None:
    to_dunno: list[float] = []
    to_mail: list[float] = []
    for n in range(count):
        ip = listed_ip(10 * n + 1)
        while policy_answer(policy, ip) == "action=DUNNO":  # the server has loaded its snapshot
            time.sleep(0.2)
        email = f"bench{n}@sender.example"
        asked = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", portal, timeout=30)
        body = urllib.parse.urlencode({"ip": ip, "email": email})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        connection.request("POST", "/request", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 202, response.status
        while not sink.to(email):
            time.sleep(0.01)
        to_mail.append(time.perf_counter() - asked)
        link = sink.to(email)[0].link()
        path = urllib.parse.urlsplit(link).path
        connection.request("GET", path)
        page = connection.getresponse().read().decode()
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
        clicked = time.perf_counter()
        connection.request("POST", path, body=urllib.parse.urlencode(fields), headers=headers)
        done = connection.getresponse()
        assert done.status == 200 and b"was removed" in done.read(), done.status
        while policy_answer(policy, ip) != "action=DUNNO":
            time.sleep(0.05)
        to_dunno.append(time.perf_counter() - clicked)
        connection.close()
    print(f"delist: {count} senders' whole path by HTTP")
    print(
        f"  Delist -> policy answers DUNNO: median {statistics.median(to_dunno):.2f} s, "
        f"worst {max(to_dunno):.2f} s (policy refresh 5 s)"
    )
    print(
        f"  request -> mail at the relay: median {statistics.median(to_mail) * 1000:.0f} ms, "
        f"worst {max(to_mail) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database", help="PostgreSQL URL to create a database on (default: scripts/postgres)"
    )
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--delistings", type=int, default=20)
    parser.add_argument(
        "--workers", type=int, default=2, help="portal processes (default 2: one per core here)"
    )
    args = parser.parse_args()
    with scratch_database(args.database or service("postgres")) as database:
        run(args, database)


def run(args: argparse.Namespace, database: str) -> None:
    fill_listings(database, args.listings)
    fill_history(database)
    sink = SmtpSink().start()
    portal_port = free_ports(2)
    policy_port = portal_port + 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "ABUSEPIPE_DATABASE_URL": database,
        "ABUSEPIPE_PORTAL_URL": f"http://127.0.0.1:{portal_port}/",
        "ABUSEPIPE_MAIL_RELAY": sink.relay,
        "ABUSEPIPE_MAIL_FROM": "delist@abuse.example.net",
        "ABUSEPIPE_PORTAL_CLIENT_REQUESTS": "1000",
    }
    logs = Path(tempfile.mkdtemp(prefix="abusepipe-portal-bench-"))
    portal = start(
        ["portal", "--listen", f"127.0.0.1:{portal_port}", "--workers", str(args.workers)],
        env,
        logs / "portal.log",
    )
    policy = start(["policy", "--listen", f"127.0.0.1:{policy_port}"], env, logs / "policy.log")
    try:
        wait_http(portal_port, portal, logs / "portal.log")
        lookups(portal_port, portal.pid, args.listings, args.clients, args.seconds)
        delistings(portal_port, policy_port, sink, args.delistings)
    finally:
        for process in (portal, policy):
            process.terminate()
            process.wait(30)
        sink.stop()


if __name__ == "__main__":
    run_main(main)
