"""Parse throughput and peak memory: abusepipe vs the bare stdlib floor vs parsedmarc (auth-failure files).

    python benchmarks/parse.py [--corpus ../shared/corpus] [--bulk] [--seconds 5]
    python benchmarks/parse.py --cli [--copies 100] [--runs 3] [--checkout DIR]...

Each measurement runs in its own process pinned to one core, so its peak RSS is its own. parsedmarc is
optional (`pip install parsedmarc` into the benchmark's environment) and runs with offline=True.

--cli measures what a user sees: `abusepipe parse` over the corpus's small `.eml` files (up to 8 KiB)
copied --copies times, start-up and JSON output included, against a bare stdlib loop
(`email.message_from_bytes`) over the same files in a process of its own; both read the files from
disk. With --checkout DIR (another checkout with its own .venv), each is measured too, the runs
interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"


def corpus_files(corpus: Path, bulk: bool, kind: str) -> list[Path]:
    if kind == "auth-failure":
        return sorted((corpus / "auth-failure").glob("*.eml"))
    files = sorted(p for p in corpus.rglob("*") if p.suffix in (".eml", ".msg", ".txt") and p.is_file())
    if bulk:
        files += sorted((corpus.parent / "corpus-bulk").rglob("*.eml"))
    return files


TRAP = os.environ.get("ABUSEPIPE_BENCH_TRAP") == "1"


def _runner(method: str):  # type: ignore[no-untyped-def]
    if method == "stdlib":
        import email

        return lambda raw: email.message_from_bytes(raw)
    if method == "abusepipe":
        sys.path.insert(0, str(ROOT))
        from abusepipe.errors import ReportRejected
        from parsers import parse_message

        def run(raw: bytes) -> object:
            try:
                return parse_message(raw, trap=TRAP)
            except ReportRejected:
                return None  # a rejection is a parse outcome too; it costs the same work

        return run
    if method == "abusepipe-json":
        sys.path.insert(0, str(ROOT))
        from abusepipe.errors import ReportRejected
        from parsers import parse_message

        def run_json(raw: bytes) -> object:
            try:
                return [r.model_dump_json() for r in parse_message(raw, trap=TRAP)]
            except ReportRejected:
                return None

        return run_json
    if method == "parsedmarc":
        import logging

        import parsedmarc

        logging.disable(logging.CRITICAL)

        def run_parsedmarc(raw: bytes) -> object:
            try:
                return parsedmarc.parse_report_email(raw, offline=True)
            except Exception:
                return None

        return run_parsedmarc
    raise SystemExit(f"unknown method {method}")


def peak_rss_mib() -> float:
    """This process's own peak RSS (ru_maxrss would include the forking parent's on Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(method: str, files: list[str], seconds: float) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    raws = [Path(f).read_bytes() for f in files]
    run = _runner(method)
    failures = sum(run(raw) is None for raw in raws)  # warm-up pass (imports, caches)
    slowest = 0.0
    for raw in raws:
        began = time.perf_counter()
        run(raw)
        slowest = max(slowest, time.perf_counter() - began)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for raw in raws:
            run(raw)
        done += len(raws)
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "method": method,
                "messages": done,
                "seconds": elapsed,
                "rate": done / elapsed,
                "peak_rss_mib": peak_rss_mib(),
                "no_result": failures,
                "files": len(raws),
                "bytes": sum(map(len, raws)),
                "slowest_ms": slowest * 1000,
            }
        )
    )


def measure(method: str, files: list[Path], seconds: float) -> dict[str, float] | None:
    args = [sys.executable, __file__, "--worker", method, "--seconds", str(seconds), *map(str, files)]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        print(f"  {method}: not run ({last})")
        return None
    return json.loads(result.stdout)  # type: ignore[no-any-return]


SMALL_BYTES = 8 * 1024
BARE_LOOP = """
import email, sys
for name in sys.argv[1:]:
    with open(name, "rb") as handle:
        email.message_from_bytes(handle.read())
"""


def cli_benchmark(corpus: Path, copies: int, checkouts: list[Path], runs: int = 3) -> None:
    small = [p for p in sorted(corpus.rglob("*.eml")) if p.stat().st_size <= SMALL_BYTES]
    if not small:
        raise SystemExit(f"parse benchmark: no .eml files of up to 8 KiB under {corpus}")
    with tempfile.TemporaryDirectory(prefix="abusepipe-parse-") as tmp:
        files = []
        for n in range(copies):
            for i, path in enumerate(small):
                copy = Path(tmp) / f"{n:03d}-{i:03d}.eml"
                copy.write_bytes(path.read_bytes())
                files.append(str(copy))
        print(
            f"`abusepipe parse` over {len(small)} small .eml reports x {copies} = {len(files)} files "
            f"({sum(p.stat().st_size for p in small) * copies / 2**20:.1f} MiB), best of {runs}"
        )
        commands = {"stdlib loop": [sys.executable, "-c", BARE_LOOP, *files]}
        for checkout in checkouts:
            command = checkout / ".venv" / "bin" / "abusepipe"
            if not command.exists():
                raise SystemExit(f"parse benchmark: {checkout} has no .venv/bin/abusepipe")
            commands[f"abusepipe parse ({checkout.resolve().name})"] = [str(command), "parse", *files]
        # CPU time (user + system) of each child is the figure: less disturbed than wall time by whatever
        # else the machine runs; wall time is shown beside it.
        best: dict[str, tuple[float, float]] = {}
        for _ in range(runs):
            for label, argv in commands.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                began = time.perf_counter()
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
                wall = time.perf_counter() - began
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                if label not in best or cpu < best[label][0]:
                    best[label] = (cpu, wall)
        floor = best["stdlib loop"][0]
        for label, (cpu, wall) in best.items():
            print(
                f"  {label:32} {cpu:6.2f} s CPU ({wall:5.2f} s wall)  {len(files) / cpu:7.0f} files/s"
                f"  {floor / cpu:5.2f}x the stdlib loop's rate"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--bulk", action="store_true", help="add ../shared/corpus-bulk to the mix")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--trap", action="store_true", help="parse in trap mode (for the bulk junk)")
    parser.add_argument("--cli", action="store_true", help="`abusepipe parse` on small reports, end to end")
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--checkout", type=Path, action="append", default=[])
    parser.add_argument("--runs", type=int, default=3, help="--cli: runs of each command; the best counts")
    parser.add_argument("--worker")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.files, args.seconds)
        return
    if not args.corpus.is_dir():
        raise SystemExit(f"parse benchmark: no corpus at {args.corpus} (give --corpus DIR)")
    if args.cli:
        cli_benchmark(args.corpus, args.copies, args.checkout or [ROOT], runs=max(1, args.runs))
        return

    if args.trap:
        os.environ["ABUSEPIPE_BENCH_TRAP"] = "1"
    mix = corpus_files(args.corpus, args.bulk, "mix")
    size = sum(p.stat().st_size for p in mix)
    print(f"corpus mix: {len(mix)} files, {size / len(mix) / 1024:.1f} KiB mean, one core each")
    results = {m: measure(m, mix, args.seconds) for m in ("stdlib", "abusepipe", "abusepipe-json")}
    for method, r in results.items():
        if r:
            print(
                f"  {method:16} {r['rate']:9.0f} msg/s   peak RSS {r['peak_rss_mib']:6.1f} MiB"
                f"   slowest message {r['slowest_ms']:6.1f} ms"
            )
    if results["stdlib"] and results["abusepipe"]:
        print(
            f"  abusepipe is {results['abusepipe']['rate'] / results['stdlib']['rate']:.2f}x the stdlib floor"
        )

    auth = corpus_files(args.corpus, False, "auth-failure")
    print(f"auth-failure reports: {len(auth)} files")
    pair = {m: measure(m, auth, args.seconds) for m in ("abusepipe", "parsedmarc")}
    for method, r in pair.items():
        if r:
            print(
                f"  {method:16} {r['rate']:9.0f} msg/s   peak RSS {r['peak_rss_mib']:6.1f} MiB"
                f"   (no result for {r['no_result']} of {r['files']})"
            )
    if pair["abusepipe"] and pair["parsedmarc"]:
        print(f"  abusepipe is {pair['abusepipe']['rate'] / pair['parsedmarc']['rate']:.1f}x parsedmarc")


if __name__ == "__main__":
    main()
