"""The console and API under load: 8 concurrent HTTP clients on the 1,000,000-report store of
`benchmarks/store.py queries`.

    python benchmarks/console.py [--database URL] [--reports 1000000] [--seconds 30] [--clients 8]

With no --database, PostgreSQL comes from scripts/postgres and a fresh database is filled (once per run;
~10 minutes here for a million reports). `abusepipe serve` runs as a process of its own; the clients run
in this one (asyncio, keep-alive connections), each looping over: the API offenders ranking (by ip,
24 h, top 50), one offender (the API document of a top key), and a report's HTML page. Prints p50/p99 per
request kind, requests/s over all, and the server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks.oneline import run_main  # noqa: E402
from benchmarks.pipeline import fresh_database, service  # noqa: E402
from benchmarks.store import fill_synthetic  # noqa: E402
from sinks.queries import top_offenders  # noqa: E402
from sinks.store import ReportStore  # noqa: E402

CLI = [sys.executable, "-m", "abusepipe.cli"]


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


async def client(
    base: str, token: str, plan: list[tuple[str, str]], stop: float, samples: dict[str, list[float]]
) -> None:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        rng = random.Random()
        while time.monotonic() < stop:
            kind, path = rng.choice(plan)
            began = time.perf_counter()
            response = await http.get(path)
            elapsed = (time.perf_counter() - began) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code} {response.text[:200]}")
            samples[kind].append(elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", help="a PostgreSQL URL whose database holds the filled store already")
    parser.add_argument("--reports", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    now = datetime.now(UTC)
    if args.database:
        database = args.database
    else:
        database = fresh_database(service("postgres"))
        store = ReportStore.open(database)
        fill_synthetic(store, args.reports, now)
        store.close()
        print(f"store: {database}")
    store = ReportStore.open(database)
    with store.connect() as connection:
        keys = [row.key for row in top_offenders(connection, "ip", now=now, top=20)]
        report_ids = [
            row[0] for row in connection.exec_driver_sql("SELECT report_id FROM reports LIMIT 200").all()
        ]
    store.close()
    if not keys or not report_ids:
        raise SystemExit("console benchmark: the store is empty (give --database of a filled one, or none)")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
    environment["PYTHONPATH"] = str(ROOT)
    name = f"bench-{time.time_ns()}"
    created = subprocess.run(
        [*CLI, "token", "create", "--name", name, "--role", "analyst", "--database", database],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    token = created.stdout.strip().splitlines()[-1]
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen(
        [*CLI, "serve", "--listen", f"127.0.0.1:{port}", "--database", database],
        env=environment,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("console benchmark: abusepipe serve did not start")
            time.sleep(0.2)
        plan = [("api offenders", "/api/v1/offenders?by=ip&since=24h&top=50")]
        plan += [("api offender", f"/api/v1/offenders/ip/{key}") for key in keys]
        plan += [("report page", f"/reports/{report_id}") for report_id in report_ids[:50]]
        samples: dict[str, list[float]] = {kind: [] for kind, _ in plan}

        async def run(seconds: float) -> None:
            stop = time.monotonic() + seconds
            await asyncio.gather(*(client(base, token, plan, stop, samples) for _ in range(args.clients)))

        asyncio.run(run(3))  # warm up: caches, connections
        for series in samples.values():
            series.clear()
        began = time.perf_counter()
        asyncio.run(run(args.seconds))
        elapsed = time.perf_counter() - began
        total = sum(len(s) for s in samples.values())
        print(f"{args.clients} concurrent clients for {elapsed:.0f} s on {database.rsplit('/', 1)[-1]}:")
        for kind, series in samples.items():
            if not series:
                continue
            series.sort()
            p99 = series[min(len(series) - 1, int(len(series) * 0.99))]
            p50 = statistics.median(series)
            print(f"  {kind:14} {len(series):6} requests  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
        print(f"  {total / elapsed:.0f} requests/s; server peak RSS {peak_rss_mib(server.pid):.0f} MiB")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    run_main(main)
