"""The `abusepipe` command as a user runs it: exit codes, one-line errors, no traceback, stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.mail import junk

CMD = [sys.executable, "-m", "abusepipe.cli"]


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CMD, *args], input=stdin, capture_output=True, timeout=60, check=False)


def test_parse_prints_one_json_object_per_report() -> None:
    result = run(
        "parse",
        str(SAMPLES / "flanker_fbl_aol.eml"),
        str(SAMPLES / "stalwart_arf-002_rfc5965-full-fields.eml"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2
    reports = [json.loads(line) for line in lines]
    assert [r["source"]["ip"] for r in reports] == ["173.193.210.34", "192.0.2.1"]
    assert all(r["schema_version"] == 1 and r["received_at"] for r in reports)
    assert result.stderr == b""


def test_rejected_files_are_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    plain = tmp_path / "plain.eml"
    plain.write_bytes(junk())
    result = run(
        "parse",
        str(plain),
        str(tmp_path / "missing.eml"),
        str(SAMPLES / "flanker_fbl_aol.eml"),
        str(tmp_path),
    )
    assert result.returncode == 2
    err = result.stderr.decode().splitlines()
    assert len(err) == 3
    assert err[0].startswith(f"{plain}: rejected: not an abuse report")
    assert err[1] == f"{tmp_path / 'missing.eml'}: rejected: cannot read: No such file or directory"
    assert err[2] == f"{tmp_path}: rejected: cannot read: is a directory"
    assert len(result.stdout.decode().splitlines()) == 1
    assert b"Traceback" not in result.stderr


def test_stdin_and_trap_mode() -> None:
    result = run("parse", "--trap", "-", stdin=junk())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["format"] == "trap"
    rejected = run("parse", "-", stdin=b"\x00\xff garbage")
    assert rejected.returncode == 2
    assert rejected.stderr.decode().startswith("<stdin>: rejected: ")


def test_trusted_network_option_and_bad_cidr() -> None:
    ok = run("parse", "--trap", "--trusted-network", "8.8.4.0/24", "-", stdin=junk())
    assert json.loads(ok.stdout)["source"]["ip"] == "1.2.3.4"
    bad = run("parse", "--trusted-network", "banana", "-", stdin=junk())
    assert bad.returncode == 2
    assert bad.stderr.decode().strip() == "abusepipe: error: --trusted-network: not a network: 'banana'"


def test_bad_arguments_give_usage_not_traceback() -> None:
    result = run("parse")
    assert result.returncode == 2
    assert b"usage:" in result.stderr and b"Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["ingest", "smtp", "imap", "graph"])
def test_a_negative_worker_count_is_refused_not_taken_for_none(command: str) -> None:
    result = run(command, "--workers", "-1", "-")
    assert result.returncode == 2
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last == f"abusepipe {command}: error: argument --workers: '-1' must be at least 0"


def test_schema_command_prints_json_schema() -> None:
    result = run("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    props = schema["properties"]
    for field in (
        "schema_version",
        "report_id",
        "format",
        "feedback_type",
        "reporter",
        "source",
        "original",
        "defects",
    ):
        assert field in props
    source = schema["$defs"]["Source"]["properties"]
    assert {"ip", "handoff_ip", "platform", "tenant_id"} <= set(source)
    original = schema["$defs"]["Original"]["properties"]
    assert {"message_id", "subject", "from_domain"} <= set(original)


def test_library_log_noise_is_silenced() -> None:
    raw = junk(
        headers=[
            ("From", "a:;b <x@y.example>"),
            ("Subject", "x"),
            ("Received", "from a (a [8.8.8.8]) by b with ESMTP; Mon"),
        ]
    )
    result = run("parse", "--trap", "-", stdin=raw)
    assert result.returncode == 0
    assert result.stderr == b""


def test_list_and_mapping_settings_from_the_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
    bad = subprocess.run(
        [sys.executable, "-m", "abusepipe.cli", "smtp"],
        env={**env, "ABUSEPIPE_SMTP_RECIPIENTS": "abuse@example.net"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert bad.stderr == (
        'abusepipe: error: error parsing value for field "smtp_recipients" from source "EnvSettingsSource"'
        " (a list or mapping setting takes JSON)\n"
    )
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from abusepipe.settings import Settings; s = Settings(); print(s.imap_folders, s.trusted_networks)",
        ],
        env={**env, "ABUSEPIPE_IMAP_FOLDERS": "INBOX, Junk", "ABUSEPIPE_TRUSTED_NETWORKS": '["10.0.0.0/8"]'},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    assert listed.stdout == "('INBOX', 'Junk') ('10.0.0.0/8',)\n"
