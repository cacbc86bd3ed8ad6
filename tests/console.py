"""A real `abusepipe serve` process on a store of its own, and tokens of every role, for the tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

CMD = [sys.executable, "-m", "abusepipe.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli(
    database: str, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
    return subprocess.run(
        [*CMD, *args, "--database", database],
        input=stdin.decode() if stdin else None,
        env={**environment, **(env or {}), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class Console:
    def __init__(self, tmp: Path, database: str) -> None:
        self.database = database
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"console-{self.port}.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*CMD, "serve", "--listen", f"127.0.0.1:{self.port}", "--database", database],
                stderr=log,
                env={**environment, "PYTHONPATH": str(ROOT)},
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            assert self.process.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.2)
        self.tokens = {role: self.token(f"test-{role}", role) for role in ("viewer", "analyst", "admin")}

    def token(self, name: str, role: str) -> str:
        done = cli(self.database, "token", "create", "--name", name, "--role", role)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def get(self, path: str, token: str | None = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.base + path, headers=headers)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, path: str, role: str = "admin") -> Any:
        status, _, body = self.get(path, self.tokens[role])
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
