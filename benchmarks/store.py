"""Store throughput and query latency.

    python benchmarks/store.py ingest --database URL [--reports 100000]
        end to end: the corpus .eml mix replicated (each copy made unique) into one mbox, then
        `abusepipe ingest` of that mbox; prints reports/s.
    python benchmarks/store.py queries --database URL [--reports 1000000]
        fills the store with synthetic reports (varied sources, reporters, 30 days), then times
        `offenders --by ip --since 24h --top 50` and `offender ip KEY` (median and worst of 20 runs).

Use a fresh database each time (the numbers are for an empty store growing to the given size).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abusepipe.errors import ReportRejected  # noqa: E402
from benchmarks.oneline import run_main  # noqa: E402
from parsers import parse_message  # noqa: E402
from schemas import AbuseReport, Original, Reporter, Source  # noqa: E402
from sinks.queries import offender_detail, top_offenders  # noqa: E402
from sinks.store import ReportStore  # noqa: E402
from sinks.stored import StoredMessage  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"


def build_mbox(target_reports: int, path: Path) -> tuple[int, int]:
    files = sorted(CORPUS.rglob("*.eml"))
    if not files:
        raise SystemExit(
            f"benchmark: it replicates the corpus's .eml reports, and there are none at {CORPUS}"
        )
    samples = []
    for file in files:
        raw = file.read_bytes()
        try:
            count = len(parse_message(raw))
        except ReportRejected:
            count = 0
        samples.append((raw.replace(b"\r\n", b"\n"), count))
    per_copy = sum(count for _, count in samples)
    copies = -(-target_reports // per_copy)
    messages = 0
    with path.open("wb") as out:
        for copy in range(copies):
            for index, (raw, _) in enumerate(samples):
                body = b"\n".join(
                    b">" + line if line.startswith(b"From ") else line for line in raw.split(b"\n")
                )
                out.write(b"From bench@example.invalid Mon Jun  1 10:00:00 2026\n")
                out.write(b"X-Bench-Copy: %d-%d\n" % (copy, index))  # unique bytes: new report ids
                out.write(body.rstrip(b"\n") + b"\n\n")
                messages += 1
    return messages, copies * per_copy


def bench_ingest(database: str, reports: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp) / "bench.mbox"
        messages, expected = build_mbox(reports, box)
        size = box.stat().st_size
        print(f"mbox: {messages} messages, {size / 1e6:.0f} MB, {expected} reports expected")
        began = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "abusepipe.cli", "ingest", "--database", database, str(box)],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - began
    print(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "(no summary)")
    rates = f"{expected / elapsed:.0f} reports/s, {messages / elapsed:.0f} messages/s"
    print(f"end to end: {rates} ({elapsed:.1f} s)")


def synthetic(n: int, now: datetime, rng: random.Random) -> AbuseReport:
    ip = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if rng.random() < 0.3:  # a heavy tail: some sources send a lot
        ip = f"198.51.{rng.randint(0, 3)}.{rng.randint(1, 40)}"
    domain = f"d{rng.randint(1, 20000)}.example"
    when = now - timedelta(seconds=rng.randint(0, 30 * 86400))
    return AbuseReport(
        report_id=f"{n:032x}",
        format="arf",
        feedback_type=rng.choice(["abuse"] * 8 + ["fraud", "not-spam"]),
        received_at=when,
        report_date=when,
        input_sha256=f"{n:064x}",
        reporter=Reporter(address=f"fbl{rng.randint(1, 300)}@isp.example"),
        source=Source(ip=ip, handoff_ip=ip),
        original=Original(
            from_domain=domain,
            mail_from_domain=domain,
            dkim_domains=[domain],
            url_domains=[f"u{rng.randint(1, 5000)}.example"],
        ),
    )


def fill_synthetic(store: ReportStore, reports: int, now: datetime, batch: int = 2000) -> None:
    """`reports` synthetic reports over 30 days: a heavy tail of sources, 300 reporters."""
    rng = random.Random(42)
    began = time.perf_counter()
    for start in range(0, reports, batch):
        items = [
            StoredMessage(b"x", "bench", now, reports=[synthetic(n, now, rng)])
            for n in range(start, min(start + batch, reports))
        ]
        store.write(items)
        if start and start % 100_000 == 0:
            print(f"  filled {start} reports ({start / (time.perf_counter() - began):.0f}/s)", flush=True)
    print(f"filled {reports} synthetic reports in {time.perf_counter() - began:.0f} s")


def bench_queries(database: str, reports: int) -> None:
    store = ReportStore.open(database)
    now = datetime.now(UTC)
    fill_synthetic(store, reports, now)
    with store.connect() as connection:
        key = top_offenders(connection, "ip", now=now, top=1)[0].key

        def timed(call: object) -> tuple[float, float]:
            samples = []
            for _ in range(20):
                t = time.perf_counter()
                call()  # type: ignore[operator]
                samples.append((time.perf_counter() - t) * 1000)
            return statistics.median(samples), max(samples)

        top = timed(lambda: top_offenders(connection, "ip", now=now, since=now - timedelta(hours=24), top=50))
        one = timed(lambda: offender_detail(connection, "ip", key, now=now))
    print(f"offenders --by ip --since 24h --top 50: median {top[0]:.1f} ms, worst {top[1]:.1f} ms")
    print(f"offender ip {key}: median {one[0]:.1f} ms, worst {one[1]:.1f} ms")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("ingest", "queries"))
    parser.add_argument("--database", required=True)
    parser.add_argument("--reports", type=int)
    args = parser.parse_args()
    if args.what == "ingest":
        bench_ingest(args.database, args.reports or 100_000)
    else:
        bench_queries(args.database, args.reports or 1_000_000)


if __name__ == "__main__":
    run_main(main)
