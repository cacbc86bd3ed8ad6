"""Start-up cost of the `abusepipe` command and the MTA pipe (`ingest -`, one process per message).

    python benchmarks/startup.py [--runs 15] [--pipe-messages 200] [--checkout DIR]...

Figures, each the median of --runs runs:
1. `python -c pass` with the same interpreter, the floor every command pays;
2. `abusepipe --help`, as a ratio to that floor;
3. `abusepipe ingest --quiet -` of one ARF report (tests/samples/flanker_fbl_aol.eml, made unique per
   run so that each run inserts a report) into an existing SQLite store;
4. pipe throughput: 4 concurrent `abusepipe ingest -` processes, one per message as Postfix's pipe(8) runs
   them (maxproc 4), over --pipe-messages distinct messages into one SQLite store: messages/s.

With --checkout DIR (repeatable; a checkout of another commit with its own `.venv`, e.g. made with
`git worktree add`), every checkout is measured with the runs interleaved, so that the machine's speed
drifting during the session affects each alike; ratios are given against the first checkout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "samples" / "flanker_fbl_aol.eml"
PIPE_PROCESSES = 4


class Checkout:
    """One abusepipe checkout and the interpreter of its virtual environment."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.python = self.root / ".venv" / "bin" / "python"
        self.command = self.root / ".venv" / "bin" / "abusepipe"
        if not self.command.exists():
            raise SystemExit(f"{self.root}: no .venv/bin/abusepipe (run scripts/run there once)")
        self.data = Path(tempfile.mkdtemp(prefix="abusepipe-startup-"))
        self.env = {**os.environ, "ABUSEPIPE_DATA_DIR": str(self.data)}
        self.env.pop("ABUSEPIPE_DATABASE_URL", None)
        self.env.pop("ABUSEPIPE_KAFKA_BOOTSTRAP", None)
        self._compile()

    def _compile(self) -> None:
        """Every checkout's own modules compiled to bytecode first (as scripts/run does), so that where
        PYTHONDONTWRITEBYTECODE is set the runs compare code, not one checkout compiling its sources."""
        packages = [str(p) for p in sorted(self.root.iterdir()) if (p / "__init__.py").exists()]
        command = [str(self.python), "-m", "compileall", "-q", *packages]
        subprocess.run(command, capture_output=True, check=False)

    def label(self) -> str:
        try:
            rev = subprocess.run(
                ["git", "-C", str(self.root), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            rev = "?"
        return f"{self.root.name}@{rev}"

    def run(self, args: list[str], stdin: bytes | None = None) -> float:
        began = time.perf_counter()
        result = subprocess.run(
            args, input=stdin, env=self.env, capture_output=True, check=False, cwd=self.data
        )
        elapsed = time.perf_counter() - began
        if result.returncode != 0:
            last = (result.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            raise SystemExit(f"{' '.join(map(str, args[:3]))} exited {result.returncode}: {last}")
        return elapsed


def unique(raw: bytes, n: int, tag: str) -> bytes:
    """The sample with a header of its own: new bytes, hence a new report id and a real insert."""
    return f"X-Startup-Benchmark: {tag}-{n}-{time.time_ns()}\r\n".encode() + raw


def pipe_throughput(checkout: Checkout, raw: bytes, messages: int) -> float:
    lock = threading.Lock()
    pending = list(range(messages))
    errors: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                n = pending.pop()
            try:
                checkout.run([str(checkout.command), "ingest", "--quiet", "-"], unique(raw, n, "pipe"))
            except SystemExit as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=worker) for _ in range(PIPE_PROCESSES)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(errors[0])
    return messages / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--pipe-messages", type=int, default=200)
    parser.add_argument(
        "--checkout", type=Path, action="append", default=[], help="a checkout to compare (repeatable)"
    )
    args = parser.parse_args()
    if not SAMPLE.is_file():
        raise SystemExit(f"startup benchmark: the sample report {SAMPLE} is missing")
    raw = SAMPLE.read_bytes()
    checkouts = [Checkout(path) for path in (args.checkout or [ROOT])]
    times: dict[str, dict[Path, list[float]]] = {"pass": {}, "help": {}, "pipe": {}}
    for checkout in checkouts:
        # The store exists beforehand, as behind an MTA: its creation is not part of a message's cost.
        checkout.run([str(checkout.command), "ingest", "--quiet", "-"], unique(raw, 0, "setup"))
        for series in times.values():
            series[checkout.root] = []
    for n in range(args.runs):
        for checkout in checkouts:
            times["pass"][checkout.root].append(checkout.run([str(checkout.python), "-c", "pass"]))
            times["help"][checkout.root].append(checkout.run([str(checkout.command), "--help"]))
            times["pipe"][checkout.root].append(
                checkout.run([str(checkout.command), "ingest", "--quiet", "-"], unique(raw, n + 1, "one"))
            )
    rates: dict[Path, list[float]] = {c.root: [] for c in checkouts}
    for _ in range(2):
        for checkout in checkouts:
            rates[checkout.root].append(pipe_throughput(checkout, raw, args.pipe_messages))

    first = checkouts[0].root
    print(f"start-up, median of {args.runs} runs (interleaved across checkouts)")
    for checkout in checkouts:
        floor = statistics.median(times["pass"][checkout.root])
        help_ = statistics.median(times["help"][checkout.root])
        pipe = statistics.median(times["pipe"][checkout.root])
        rate = max(rates[checkout.root])
        print(f"  {checkout.label()}")
        print(f"    python -c pass                    {floor * 1000:7.1f} ms")
        print(f"    abusepipe --help                  {help_ * 1000:7.1f} ms  ({help_ / floor:.1f}x python)")
        line = f"    ingest - (one ARF into SQLite)    {pipe * 1000:7.1f} ms"
        if checkout.root != first:
            base = statistics.median(times["pipe"][first])
            line += f"  ({pipe / base:.2f}x the time of {checkouts[0].label()})"
        print(line)
        line = f"    pipe, {PIPE_PROCESSES} concurrent processes     {rate:7.1f} messages/s"
        if checkout.root != first:
            line += f"  ({rate / max(rates[first]):.2f}x the rate of {checkouts[0].label()})"
        print(line)


if __name__ == "__main__":
    main()
