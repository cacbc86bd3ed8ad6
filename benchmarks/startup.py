"""Start-up cost of the `abusepipe` command and the MTA pipe (`ingest -`, one process per message).

    python benchmarks/startup.py [--runs 15] [--pipe-messages 200] [--checkout DIR]...

Figures, each the median of --runs runs:
1. `python -c pass` with the same interpreter, the floor every command pays;
2. `abusepipe --help`, as a ratio to that floor;
3. `abusepipe ingest --quiet -` of one ARF report (tests/samples/flanker_fbl_aol.eml, made unique per
   run so that each run inserts a report) into an existing SQLite store, as an MTA runs it: with the
   warm process that the first piped message started (`abusepipe.warm`), and cold
   (ABUSEPIPE_WARM_SECONDS=0: the whole command in one process);
4. pipe throughput: 4 concurrent `abusepipe ingest -` processes, one per message as Postfix's pipe(8) runs
   them (maxproc 4), over --pipe-messages distinct messages into one SQLite store: messages/s.

Each checkout gets its own data and runtime directory; the warm processes started are stopped at the end.

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
        self.env = {**os.environ, "ABUSEPIPE_DATA_DIR": str(self.data), "XDG_RUNTIME_DIR": str(self.data)}
        self.env.pop("ABUSEPIPE_WARM_SECONDS", None)
        self.warm = (self.root / "abusepipe" / "warm").is_dir()
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

    def run(self, args: list[str], stdin: bytes | None = None, *, cold: bool = False) -> float:
        env = {**self.env, "ABUSEPIPE_WARM_SECONDS": "0"} if cold else self.env
        began = time.perf_counter()
        result = subprocess.run(args, input=stdin, env=env, capture_output=True, check=False, cwd=self.data)
        elapsed = time.perf_counter() - began
        if result.returncode != 0:
            last = (result.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            raise SystemExit(f"{' '.join(map(str, args[:3]))} exited {result.returncode}: {last}")
        return elapsed

    def wait_warm(self, timeout: float = 60) -> None:
        """Until the warm process the first piped message started listens (a checkout with warm start)."""
        deadline = time.monotonic() + timeout
        while self.warm and not list(self.data.glob("abusepipe-warm-*/*.sock")):
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.label()}: no warm process started within {timeout:.0f}s")
            time.sleep(0.05)

    def stop_warm(self) -> None:
        if not self.warm:
            return
        stop = (
            "import os; from abusepipe.warm.client import ask; from abusepipe.warm.protocol import Place; "
            "ask(Place.here(os.environ), 'stop')"
        )
        subprocess.run([str(self.python), "-c", stop], env=self.env, capture_output=True, check=False)


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
    times: dict[str, dict[Path, list[float]]] = {"pass": {}, "help": {}, "pipe": {}, "cold": {}}
    try:
        for checkout in checkouts:
            # The store exists beforehand, as behind an MTA: its creation is not part of a message's cost;
            # nor is the start of the warm process, which the first message of a burst pays for.
            checkout.run([str(checkout.command), "ingest", "--quiet", "-"], unique(raw, 0, "setup"))
            checkout.wait_warm()
            for series in times.values():
                series[checkout.root] = []
        ingest = ["ingest", "--quiet", "-"]
        for n in range(args.runs):
            for checkout in checkouts:
                command = str(checkout.command)
                times["pass"][checkout.root].append(checkout.run([str(checkout.python), "-c", "pass"]))
                times["help"][checkout.root].append(checkout.run([command, "--help"]))
                times["pipe"][checkout.root].append(
                    checkout.run([command, *ingest], unique(raw, n + 1, "one"))
                )
                if checkout.warm:  # without warm start, every run above is cold already
                    times["cold"][checkout.root].append(
                        checkout.run([command, *ingest], unique(raw, n + 1, "cold"), cold=True)
                    )
        rates: dict[Path, list[float]] = {c.root: [] for c in checkouts}
        for _ in range(2):
            for checkout in checkouts:
                rates[checkout.root].append(pipe_throughput(checkout, raw, args.pipe_messages))
    finally:
        for checkout in checkouts:
            checkout.stop_warm()

    first = checkouts[0].root
    print(f"start-up, median of {args.runs} runs (interleaved across checkouts)")
    for checkout in checkouts:
        floor = statistics.median(times["pass"][checkout.root])
        help_ = statistics.median(times["help"][checkout.root])
        rate = max(rates[checkout.root])
        print(f"  {checkout.label()}{'' if checkout.warm else ' (no warm start)'}")
        print(f"    python -c pass                    {floor * 1000:7.1f} ms")
        print(f"    abusepipe --help                  {help_ * 1000:7.1f} ms  ({help_ / floor:.1f}x python)")
        for series, name in (("pipe", "ingest - (one ARF into SQLite)"), ("cold", "  the same, cold")):
            if not times[series][checkout.root]:
                continue
            pipe = statistics.median(times[series][checkout.root])
            line = f"    {name:<34}{pipe * 1000:7.1f} ms"
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
