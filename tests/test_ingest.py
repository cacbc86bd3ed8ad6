"""Intake from files, directories, Maildir, mbox and stdin, through the real `abusepipe ingest` command."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.sources import PathSource, RawMessage, SourceError, read_mbox
from tests.conftest import SAMPLES
from tests.mail import forward, junk

CMD = [sys.executable, "-m", "abusepipe.cli"]


def run(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CMD, *args], input=stdin, capture_output=True, timeout=120, check=False, env=env)


def mbox_of(messages: list[bytes]) -> bytes:
    out = b""
    for data in messages:
        body = b"\n".join(b">" + line if line.startswith(b"From ") else line for line in data.split(b"\n"))
        out += b"From sender@example.com Mon Jun  1 10:00:00 2026\n" + body.rstrip(b"\n") + b"\n\n"
    return out


def test_mbox_reader_splits_and_unquotes() -> None:
    first = b"Subject: one\n\nFrom the start of a line\nbye\n"
    second = b"Subject: two\r\n\r\nbody\r\n"
    messages = list(read_mbox(io.BytesIO(mbox_of([first, second])), "box", max_bytes=1 << 20))
    assert [m.data for m in messages] == [first, second]
    assert [m.source for m in messages] == ["box:0", f"box:{len(mbox_of([first]))}"]


def test_mbox_oversized_message_keeps_head_and_size() -> None:
    big = b"Subject: big\n\n" + b"x" * 5000 + b"\n"
    (message,) = read_mbox(io.BytesIO(mbox_of([big])), "box", max_bytes=1000)
    assert message.truncated_from is not None and message.truncated_from > 5000
    assert len(message.data) <= 1000


def test_path_source_files_dirs_maildir(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1").write_bytes(b"Subject: new\n\nx\n")
    (maildir / "cur" / "2:2,S").write_bytes(b"Subject: cur\n\nx\n")
    (maildir / "tmp" / "3").write_bytes(b"Subject: half-delivered\n\nx\n")
    tree = tmp_path / "tree" / "deep"
    tree.mkdir(parents=True)
    (tree / "a.eml").write_bytes(b"Subject: a\n\nx\n")
    (tmp_path / "box.mbox").write_bytes(mbox_of([b"Subject: m1\n\nx\n", b"Subject: m2\n\nx\n"]))
    items = list(
        PathSource(
            [str(maildir), str(tmp_path / "tree"), str(tmp_path / "box.mbox"), str(tmp_path / "missing")],
            max_bytes=1 << 20,
        )
    )
    subjects = [i.data.split(b"\n", 1)[0].decode() for i in items if isinstance(i, RawMessage)]
    assert subjects == ["Subject: new", "Subject: cur", "Subject: a", "Subject: m1", "Subject: m2"]
    errors = [i for i in items if isinstance(i, SourceError)]
    assert [(e.source, e.reason) for e in errors] == [
        (str(tmp_path / "missing"), "no such file or directory")
    ]


def test_ingest_command_end_to_end(tmp_path: Path, database_url: str) -> None:
    inbox = tmp_path / "inbox.mbox"
    inbox.write_bytes(
        mbox_of(
            [
                (SAMPLES / "flanker_fbl_aol.eml").read_bytes(),
                junk(),
                forward([junk()], sender="a@reporter.example"),
            ]
        )
    )
    first = run("ingest", "--database", database_url, str(inbox))
    assert first.returncode == 0, first.stderr
    assert "3 messages: 2 reports stored, 0 duplicates, 1 dead-lettered" in first.stderr.decode()
    again = run("ingest", "--database", database_url, str(inbox))
    assert "3 messages: 0 reports stored, 2 duplicates, 1 dead-lettered" in again.stderr.decode()
    offenders = run("offenders", "--by", "ip", "--format", "json", "--database", database_url)
    assert offenders.returncode == 0, offenders.stderr
    rows = json.loads(offenders.stdout)
    assert {r["key"] for r in rows} == {"173.193.210.34", "8.8.4.4"}
    letters = json.loads(run("deadletter", "list", "--format", "json", "--database", database_url).stdout)
    assert letters[0]["reason"].startswith("not an abuse report") and letters[0]["source"].endswith(
        ".mbox:" + letters[0]["source"].rsplit(":", 1)[1]
    )
    shown = run("deadletter", "show", str(letters[0]["id"]), "--raw", "--database", database_url)
    assert shown.stdout == junk()


def test_stdin_exit_codes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pipe.sqlite3'}"
    accepted = run("ingest", "--quiet", "--database", url, "-", stdin=forward([junk()]))
    assert accepted.returncode == 0, accepted.stderr
    (line,) = accepted.stderr.decode().splitlines()  # one structured line per message (--quiet: no summary)
    assert json.loads(line) | {"ts": None} == {
        "ts": None,
        "intake": "ingest",
        "source": "<stdin>",
        "message_id": "fwd-1@reporter.example",
        "outcome": "stored",
        "reports": 1,
    }
    # durable before exit 0: a new process finds it
    report = json.loads(run("offenders", "--by", "ip", "--format", "json", "--database", url).stdout)
    assert report[0]["key"] == "8.8.4.4"
    refused = run(
        "ingest",
        "--quiet",
        "--database",
        "postgresql+pg8000://nobody@127.0.0.1:9/none",
        "-",
        stdin=forward([junk()]),
    )
    assert refused.returncode == 75
    assert refused.stderr.decode().startswith("abusepipe: error: ")
    assert b"Traceback" not in refused.stderr and refused.stderr.count(b"\n") == 1


def test_query_command_errors_are_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.sqlite3'}"
    bad_since = run("offenders", "--by", "ip", "--since", "yesterday-ish", "--database", url)
    assert bad_since.returncode == 2
    assert bad_since.stderr.decode().startswith("abusepipe: error: --since: 'yesterday-ish' is neither")
    missing = run("report", "0" * 32, "--database", url)
    assert missing.returncode == 3 and missing.stderr.decode().strip() == f"abusepipe: no report {'0' * 32}"
    bad_kind = run("offenders", "--by", "planet", "--database", url)
    assert bad_kind.returncode == 2 and b"invalid choice" in bad_kind.stderr


@pytest.mark.parametrize("size_mb", [200])
def test_large_mbox_in_bounded_memory(tmp_path: Path, size_mb: int) -> None:
    """Reading a mbox much larger than the memory it may use (measured in a fresh process)."""
    message = forward([junk()])
    box = tmp_path / "large.mbox"
    chunk = mbox_of([message]) * 100
    with box.open("wb") as handle:
        while handle.tell() < size_mb * 1024 * 1024:
            handle.write(chunk)
    # VmHWM is this process's own peak; ru_maxrss would include the forking parent's (Linux keeps it).
    probe = (
        "import re, sys\n"
        "from ingest.sources import PathSource\n"
        "n = sum(1 for _ in PathSource([sys.argv[1]], max_bytes=1 << 20))\n"
        "peak = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024\n"
        "print(n, peak)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(box)], capture_output=True, text=True, check=True)
    messages, peak_mib = map(int, out.stdout.split())
    assert messages == box.stat().st_size // len(mbox_of([message]))
    assert peak_mib < 64, f"peak RSS {peak_mib} MiB for a {size_mb} MiB mbox"


def test_parallel_parsing_gives_the_serial_result(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from ingest.runner import ParseOptions, ingest
    from sinks.store import ReportStore

    corpus = [p.read_bytes() for p in sorted(SAMPLES.glob("*.eml"))] + [junk(), forward([junk()])]
    box = tmp_path / "mix.mbox"
    box.write_bytes(mbox_of(corpus * 3))
    fixed = datetime(2026, 11, 1, tzinfo=UTC)
    results = {}
    for workers in (0, 2):
        store = ReportStore.open(f"sqlite:///{tmp_path / f'w{workers}.sqlite3'}")
        summary = ingest(
            PathSource([str(box)], max_bytes=1 << 24),
            store,
            ParseOptions(),
            batch_size=7,
            workers=workers,
            clock=lambda: fixed,
        )
        with store.connect() as connection:
            from sqlalchemy import select

            from sinks import models as m

            rows = connection.execute(
                select(m.reports.c.report_id, m.reports.c.document).order_by(m.reports.c.report_id)
            ).all()
            offenders = connection.execute(
                select(m.offenders).order_by(m.offenders.c.kind, m.offenders.c.key)
            ).all()
        store.close()
        results[workers] = (summary.messages, summary.reports, summary.dead_lettered, rows, offenders)
    assert results[0] == results[2]
    assert results[0][1] > 10


def test_store_from_environment_and_settings_file(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
    from_env = tmp_path / "env.sqlite3"
    result = run(
        "ingest",
        "--quiet",
        "-",
        stdin=forward([junk()]),
        env={**env, "ABUSEPIPE_DATABASE_URL": f"sqlite:///{from_env}"},
    )
    assert result.returncode == 0, result.stderr
    assert from_env.exists()
    from_file = tmp_path / "file.sqlite3"
    config = tmp_path / "abusepipe.toml"
    config.write_text(f'database_url = "sqlite:///{from_file}"\ntrusted_networks = ["8.8.4.0/24"]\n')
    listed = run(
        "ingest", "--quiet", "--trap", "-", stdin=junk(), env={**env, "ABUSEPIPE_CONFIG": str(config)}
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(
        run(
            "offenders", "--by", "ip", "--format", "json", env={**env, "ABUSEPIPE_CONFIG": str(config)}
        ).stdout
    )
    assert [r["key"] for r in rows] == ["1.2.3.4"]  # the trusted network moved the boundary
    default_home = tmp_path / "home"
    summary = run("ingest", "-", stdin=forward([junk()]), env={**env, "XDG_DATA_HOME": str(default_home)})
    assert summary.returncode == 0, summary.stderr
    assert f"into sqlite:///{default_home}/abusepipe/abusepipe.sqlite3" in summary.stderr.decode()


def test_mbox_message_larger_than_a_read_block_is_skipped_in_bounded_memory() -> None:
    from ingest.sources import READ_SIZE

    huge = b"Subject: huge\n\n" + (b"y" * 99 + b"\n") * ((2 * READ_SIZE) // 100) + b"\n"
    after = b"Subject: after\n\nfine\n"
    messages = list(
        read_mbox(io.BytesIO(mbox_of([b"Subject: before\n\nok\n", huge, after])), "box", max_bytes=1000)
    )
    assert [m.data.split(b"\n", 1)[0] for m in messages] == [
        b"Subject: before",
        b"Subject: huge",
        b"Subject: after",
    ]
    big = messages[1]
    assert big.truncated_from is not None and big.truncated_from >= 2 * READ_SIZE
    assert len(big.data) <= 1000
    assert messages[2].data == after


def test_a_failed_batch_stops_the_ingest_and_nothing_after_it_is_written() -> None:
    from datetime import UTC, datetime

    from ingest.runner import ParseOptions, ingest
    from sinks.store import StoreUnavailable
    from sinks.stored import BatchResult

    class FlakyStore:
        """In-memory stand-in: the second batch fails as a lost database connection would."""

        def __init__(self) -> None:
            self.batches: list[int] = []

        def write(self, batch: list[object]) -> BatchResult:
            if len(self.batches) == 1:
                self.batches.append(-1)
                raise StoreUnavailable("store write failed: connection lost")
            self.batches.append(len(batch))
            return BatchResult(messages=len(batch))

    store = FlakyStore()
    box = io.BytesIO(mbox_of([forward([junk()], subject=f"Fwd: {i}") for i in range(10)]))
    source = list(read_mbox(box, "box", max_bytes=1 << 20))
    acknowledged: list[str] = []
    with pytest.raises(StoreUnavailable):
        ingest(
            source,
            store,  # type: ignore[arg-type]
            ParseOptions(),
            batch_size=3,
            on_acknowledged=lambda batch: acknowledged.extend(m.source for m in batch),
            clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        )
    assert store.batches == [3, -1]
    assert acknowledged == [m.source for m in source[:3]]  # only the batch the sink took


def test_a_checkpoint_skips_what_an_earlier_run_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    inbox = tmp_path / "in"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"{i}.eml").write_bytes(forward([junk(extra=[("X-Seq", str(i))])]))
    (inbox / "box.mbox").write_bytes(mbox_of([forward([junk(extra=[("X-Seq", f"m{i}")])]) for i in range(2)]))
    checkpoint = tmp_path / "done.jsonl"
    first = run("ingest", "--checkpoint", str(checkpoint), "--database", url, str(inbox))
    assert first.returncode == 0, first.stderr.decode()
    assert "5 messages: 5 reports stored" in first.stderr.decode()
    recorded = [json.loads(line) for line in checkpoint.read_text().splitlines()]
    assert sorted(recorded) == sorted(
        [
            *(str(inbox / f"{i}.eml") for i in range(3)),
            *(
                f"{inbox / 'box.mbox'}:{offset}"
                for offset in (0, len(mbox_of([forward([junk(extra=[("X-Seq", "m0")])])])))
            ),
        ]
    )
    (inbox / "3.eml").write_bytes(forward([junk(extra=[("X-Seq", "3")])]))
    second = run("ingest", "--checkpoint", str(checkpoint), "--database", url, str(inbox))
    assert second.returncode == 0
    assert "1 messages: 1 reports stored, 0 duplicates" in second.stderr.decode()
    assert "5 skipped (in the checkpoint)" in second.stderr.decode()
    assert len(checkpoint.read_text().splitlines()) == 6

    checkpoint.write_text('"fine"\nnot json\n')
    broken = run("ingest", "--checkpoint", str(checkpoint), "--database", url, str(inbox))
    assert broken.returncode == 2
    assert (
        broken.stderr.decode()
        == f"abusepipe: error: {checkpoint}:2: not a checkpoint line (a JSON string per line)\n"
    )
