"""Intake throughput: messages/s accepted over SMTP (4 concurrent clients), into the embedded store and
into Kafka, and read over IMAP.

    python benchmarks/intake.py [--messages 4000] [--kafka HOST:PORT] [--imap]

The messages are the corpus mix (../shared/corpus .eml files), each copy made unique. The broker
(scripts/kafka) and, for --imap, Dovecot (scripts/dovecot) are started by the script unless given. The
SMTP figure is from the first message sent to the last `250` received, i.e. every message durable.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imapclient import IMAPClient  # noqa: E402

from benchmarks.oneline import run_main  # noqa: E402
from benchmarks.pipeline import scratch_topics, service  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
CMD = [sys.executable, "-m", "abusepipe.cli"]
CLIENTS = 4


def corpus_messages(count: int) -> list[bytes]:
    samples = [p.read_bytes() for p in sorted(CORPUS.rglob("*.eml"))]
    if not samples:
        sys.exit(f"intake benchmark: it sends the corpus's .eml reports, and there are none at {CORPUS}")
    out = []
    for i in range(count):
        raw = samples[i % len(samples)].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        out.append(b"X-Bench-Copy: %d\r\n" % i + raw)
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def smtp(messages: list[bytes], env: dict[str, str], label: str) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "smtp.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [*CMD, "smtp", "--listen", f"127.0.0.1:{port}", "--recipient", "abuse@example.net"],
                env={**env, "ABUSEPIPE_DATA_DIR": tmp, "PYTHONPATH": str(ROOT)},
                stderr=out,
            )
        while "listening on" not in log.read_text():
            if server.poll() is not None:
                sys.exit(log.read_text())
            time.sleep(0.1)
        failures: list[str] = []

        def client(part: list[bytes]) -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=300) as connection:
                for raw in part:
                    try:
                        connection.sendmail("bench@example.org", ["abuse@example.net"], raw)
                    except smtplib.SMTPException as exc:
                        failures.append(str(exc))

        threads = [threading.Thread(target=client, args=(messages[i::CLIENTS],)) for i in range(CLIENTS)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        server.terminate()
        server.wait(timeout=60)
        summary = [line for line in log.read_text().splitlines() if "stopped:" in line]
    rate = len(messages) / elapsed
    sent = f"{len(messages)} messages from {CLIENTS} clients"
    print(f"SMTP into {label}: {sent} in {elapsed:.1f} s: {rate:.0f} messages/s")
    print(
        f"  {summary[-1].removeprefix('abusepipe: ') if summary else '(no summary)'}; {len(failures)} refused"
    )


def imap(messages: list[bytes]) -> None:
    host, port, _, user, password, ca_file = service("dovecot").split()
    folder = f"bench{uuid.uuid4().hex[:8]}"
    context = ssl.create_default_context(cafile=ca_file)
    with IMAPClient(host, int(port), ssl=False, timeout=60) as client:
        client.starttls(context)
        client.login(user, password)
        client.create_folder(folder)
        for raw in messages:
            client.append(folder, raw)
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        done = subprocess.run(
            [*CMD, "imap", "--once", "--host", host, "--port", port, "--security", "starttls",
             "--ca-file", ca_file, "--user", user, "--folder", folder, "--processed-folder", f"{folder}-done",
             "--rejected-folder", f"{folder}-rejected", "--database", f"sqlite:///{tmp}/store.sqlite3"],
            env={**os.environ, "ABUSEPIPE_IMAP_PASSWORD": password, "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(done.stderr[-2000:])
    summary = [line for line in done.stderr.splitlines() if "done:" in line]
    rate = len(messages) / elapsed
    print(f"IMAP into the embedded store: {len(messages)} messages in {elapsed:.1f} s: {rate:.0f} messages/s")
    print(f"  {summary[-1].removeprefix('abusepipe: ') if summary else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--kafka", help="bootstrap server (default: start scripts/kafka)")
    parser.add_argument("--imap", action="store_true", help="also measure IMAP (starts scripts/dovecot)")
    args = parser.parse_args()
    messages = corpus_messages(args.messages)
    base = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
    mean = sum(map(len, messages)) / len(messages) / 1024
    print(f"machine: {os.cpu_count()} cores; corpus mix, {mean:.1f} KiB mean")
    smtp(messages, base, "the embedded store (SQLite)")
    bootstrap = args.kafka or service("kafka")
    with scratch_topics(bootstrap) as kafka:
        smtp(messages, {**base, **kafka.environment()}, f"Kafka ({bootstrap})")
    if args.imap:
        imap(messages)


if __name__ == "__main__":
    run_main(main)
