"""The blocked-senders list under load: policy lookups, the cost of listing on ingest, exports.

    python benchmarks/blocklist.py [--database URL] [--listings 100000] [--connections 16]
                                   [--seconds 20] [--reports 20000] [--rounds 3]
                                   [--export-listings 1000000]

PostgreSQL comes from scripts/postgres unless --database names a server; every part uses fresh
databases on it.

1. lookups: `abusepipe policy` answering from --listings listings (IPs and networks), asked by
   --connections concurrent Postfix-style connections (from --client-processes processes; the server
   pinned to one core, the clients to the others, so that neither waits for the other's time slice):
   lookups/s, latency p50/p99 as the clients see them, and lookups per CPU-second of the server.
2. ingest: `abusepipe ingest` of --reports fresh reports (256 reporters, 1,000 source IPs, so that
   listings are made while it runs) into PostgreSQL with the listing policy on and off, alternately,
   --rounds times each: the median wall time of each and the ratio.
3. export: `abusepipe blocklist export` of --export-listings listings, per format: seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from benchmarks.oneline import run_main  # noqa: E402
from benchmarks.pipeline import scratch_database, service  # noqa: E402
from sinks.store import ReportStore  # noqa: E402
from tests.mail import many_reports  # noqa: E402

CLI = [sys.executable, "-m", "abusepipe.cli"]


def environment(database: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        ABUSEPIPE_DATABASE_URL=database,
        ABUSEPIPE_PORTAL_URL="https://delist.example.net/",
        **extra,
    )
    return env


def fill_listings(database: str, count: int) -> None:
    """`count` listings in force: nine IPs for every /24, and a network now and then."""
    ReportStore.open(database).close()
    engine = create_engine(database)
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO listings (kind, key, state, origin, reason, reason_code, listed_at,
                                      expires_at, ttl_seconds, last_evidence_at, network, updated_at)
                SELECT CASE WHEN mod(n, 10) = 0 THEN 'network' ELSE 'ip' END,
                       (10 + mod(n / 65536, 200)) || '.' || mod(n / 256, 256) || '.' || mod(n, 256) || '.'
                       || CASE WHEN mod(n, 10) = 0 THEN '0/24' ELSE (1 + mod(n, 250))::text END,
                       'listed', 'policy', '3 distinct reporters reported junk from it', 'reports',
                       now(), now() + interval '1 day', 86400, now(), NULL, now() - interval '1 hour'
                FROM generate_series(1, :count) AS n
                ON CONFLICT DO NOTHING
                """
            ),
            {"count": count},
        )
    # A store in use is vacuumed and analysed; a table filled a second ago is not yet (its first reader
    # would pay for setting every row's hint bits).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE listings"))
    engine.dispose()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(address: str) -> bytes:
    return (
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
        f"client_address={address}\nclient_name=unknown\nreverse_client_name=unknown\n"
        "helo_name=mail.example.com\nsender=a@sender.example\nrecipient=u@test.example\n"
        "recipient_count=0\nqueue_id=\ninstance=1a2b.3c4d5e.6f7a8.0\nsize=0\netrn_domain=\n"
        "stress=\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\n"
        "ccert_fingerprint=\nencryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\n"
        "encryption_keysize=256\n\n"
    ).encode()


def client_process(port: int, connections: int, seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:  # the clients on the other cores: the server's core is its own
        os.sched_setaffinity(0, cores[1:])

    async def connection(latencies: list[float], answers: list[int], stop: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        rng = random.Random()
        while time.perf_counter() < stop:
            n = rng.randrange(1, 1_000_000)
            address = f"{10 + n // 65536 % 200}.{n // 256 % 256}.{n % 256}.{1 + n % 250}"
            began = time.perf_counter()
            writer.write(request(address))
            reply = await reader.readuntil(b"\n\n")
            latencies.append(time.perf_counter() - began)
            answers.append(0 if reply.startswith(b"action=DUNNO") else 1)
        writer.close()

    async def main() -> tuple[list[float], list[int]]:
        latencies: list[float] = []
        answers: list[int] = []
        stop = time.perf_counter() + seconds
        await asyncio.gather(*(connection(latencies, answers, stop) for _ in range(connections)))
        return latencies, answers

    out.put(asyncio.run(main()))


def lookups(database: str, listings: int, connections: int, seconds: float, processes: int) -> None:
    fill_listings(database, listings)
    port = 19000 + os.getpid() % 1000
    log = Path(tempfile.mkdtemp(prefix="abusepipe-policy-")) / "policy.log"
    with log.open("wb") as err:
        server = subprocess.Popen(
            [*CLI, "policy", "--listen", f"127.0.0.1:{port}"], env=environment(database), stderr=err
        )
    try:
        deadline = time.monotonic() + 60
        while "policy server on" not in log.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"policy server did not start: {log.read_text()}")
            time.sleep(0.1)
        loaded = log.read_text().split("(", 1)[1].split(" ", 1)[0]
        queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        shares = [
            connections // processes + (1 if i < connections % processes else 0) for i in range(processes)
        ]
        clients = [
            multiprocessing.Process(target=client_process, args=(port, n, seconds, queue))
            for n in shares
            if n
        ]
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > 1:
            os.sched_setaffinity(server.pid, cores[:1])
        cpu_before = cpu_seconds(server.pid)
        began = time.perf_counter()
        for process in clients:
            process.start()
        results = [queue.get(timeout=seconds + 60) for _ in clients]
        elapsed = time.perf_counter() - began
        cpu = cpu_seconds(server.pid) - cpu_before
        for process in clients:
            process.join()
    finally:
        server.terminate()
        server.wait(30)
        log.unlink(missing_ok=True)
    latencies = sorted(x for result in results for x in result[0])
    listed = sum(x for result in results for x in result[1])
    count = len(latencies)
    p99 = latencies[min(count - 1, int(count * 0.99))]
    print(f"lookups: {loaded} listings loaded, {connections} connections, {elapsed:.0f} s")
    print(
        f"  {count / elapsed:,.0f} lookups/s; p50 {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {p99 * 1000:.2f} ms; {listed / count:.0%} listed"
    )
    print(f"  server CPU {cpu:.1f} s: {count / cpu:,.0f} lookups per CPU-second (one core)")


def ingest_overhead(server: str, reports: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="abusepipe-bench-"))
    mbox = work / "reports.mbox"
    with mbox.open("wb") as out:
        for data in many_reports(reports):
            body = b"\n".join(
                b">" + line if line.startswith(b"From ") else line for line in data.split(b"\n")
            )
            out.write(b"From fbl@isp.example Mon Jun  1 10:00:00 2026\n" + body.rstrip(b"\n") + b"\n\n")
    times: dict[str, list[float]] = {"off": [], "on": []}
    listed = 0
    for _ in range(rounds):
        for mode in ("off", "on"):
            with scratch_database(server) as database:
                ReportStore.open(database).close()
                env = environment(database, ABUSEPIPE_BLOCKLIST_ENABLED="true" if mode == "on" else "false")
                began = time.perf_counter()
                done = subprocess.run(
                    [*CLI, "ingest", "--quiet", str(mbox)], env=env, capture_output=True, check=False
                )
                times[mode].append(time.perf_counter() - began)
                if done.returncode != 0:
                    raise SystemExit(f"ingest failed: {done.stderr.decode()[-500:]}")
                if mode == "on":
                    engine = create_engine(database)
                    with engine.connect() as connection:
                        listed = int(connection.execute(text("SELECT count(*) FROM listings")).scalar_one())
                    engine.dispose()
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"ingest of {reports} reports into PostgreSQL, {rounds} rounds each, alternately:")
    print(f"  listing policy off {off:.1f} s ({reports / off:,.0f} reports/s)")
    print(f"  listing policy on  {on:.1f} s ({reports / on:,.0f} reports/s), {listed} listings made")
    print(f"  cost of the policy: {on / off - 1:+.1%}")


def export(database: str, listings: int) -> None:
    fill_listings(database, listings)
    work = Path(tempfile.mkdtemp(prefix="abusepipe-export-"))
    print(f"export of {listings:,} listings:")
    for fmt in ("rbldnsd", "postfix", "plain", "json"):
        target = work / f"listed.{fmt}"
        began = time.perf_counter()
        done = subprocess.run(
            [*CLI, "blocklist", "export", "--format", fmt, "--output", str(target)],
            env=environment(database),
            capture_output=True,
            check=False,
        )
        elapsed = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"export failed: {done.stderr.decode()[-500:]}")
        print(f"  {fmt:8s} {elapsed:5.1f} s, {target.stat().st_size / 1e6:.0f} MB")
        target.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database", help="PostgreSQL URL to create databases on (default: scripts/postgres)"
    )
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--client-processes", type=int, default=1, help="processes sharing the connections (default 1)"
    )
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--export-listings", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("lookups", "ingest", "export"))
    args = parser.parse_args()
    server = args.database or service("postgres")
    if args.only in (None, "lookups"):
        with scratch_database(server) as database:
            lookups(database, args.listings, args.connections, args.seconds, args.client_processes)
    if args.only in (None, "ingest"):
        ingest_overhead(server, args.reports, args.rounds)
    if args.only in (None, "export"):
        with scratch_database(server) as database:
            export(database, args.export_listings)


if __name__ == "__main__":
    run_main(main)
