"""IMAP with OAuth2 on the real Dovecot (its oauth2 passdb validates JWTs locally; the tests mint them
with PyJWT), Entra ID client credentials against a loopback HTTPS token endpoint, and Microsoft Graph
against a loopback stand-in (tests/standins.py: Graph cannot be reached from here)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import trustme

from tests.conftest import ROOT, ImapServer, count_rows
from tests.mail import many_reports
from tests.standins import EntraState, GraphState, serve_entra, serve_graph
from tests.test_imap import Mailbox

CMD = [sys.executable, "-m", "abusepipe.cli"]


def env(**extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ABUSEPIPE_")},
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def run(args: list[str], timeout: float = 180, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CMD, *args], env=env(**extra), capture_output=True, text=True, timeout=timeout, check=False
    )


def mint(server: ImapServer, *, lifetime: int = 600, subject: str = "abuse") -> str:
    """A JWT as an identity platform would sign it, with the key Dovecot validates with."""
    key = base64.b64decode(Path(server.oauth2_key_file).read_text())
    now = int(time.time())
    claims = {"sub": subject, "iat": now - 5 if lifetime > 0 else now - 1200, "exp": now + lifetime}
    return jwt.encode(claims, key, algorithm="HS256", headers={"typ": "JWT"})


def token_command(tmp_path: Path, server: ImapServer, *lifetimes: int) -> str:
    """A token command printing a token of each lifetime in turn (the last one from then on)."""
    script = tmp_path / "mint_token.py"
    calls = tmp_path / "calls"
    script.write_text(
        f"""import base64, json, sys, time, jwt
from pathlib import Path
calls = Path({str(calls)!r}); n = int(calls.read_text()) if calls.exists() else 0; calls.write_text(str(n + 1))
lifetimes = {list(lifetimes)!r}; lifetime = lifetimes[min(n, len(lifetimes) - 1)]
key = base64.b64decode(Path({server.oauth2_key_file!r}).read_text()); now = int(time.time())
print(jwt.encode({{"sub": "abuse", "iat": now - 1300 if lifetime < 0 else now - 5, "exp": now + lifetime}}, key, algorithm="HS256", headers={{"typ": "JWT"}}))
"""
    )
    return f"{sys.executable} {script}"


@pytest.fixture
def mailbox(imap_server: ImapServer) -> Mailbox:
    return Mailbox(imap_server)


pytestmark = pytest.mark.integration


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_oauth2_logins_on_dovecot(auth: str, mailbox: Mailbox, tmp_path: Path) -> None:
    mailbox.append(*many_reports(2))
    database = f"sqlite:///{tmp_path / 's.sqlite3'}"
    done = run(
        [
            *mailbox.args(
                "--once",
                "--auth",
                auth,
                "--oauth2-token-command",
                token_command(tmp_path, mailbox.server, 600),
            ),
            "--database",
            database,
        ]
    )
    assert done.returncode == 0, done.stderr
    assert mailbox.count(mailbox.processed) == 2 and mailbox.count(mailbox.inbox) == 0
    assert count_rows(database) == 2
    assert "eyJ" not in done.stderr  # no token in the log


def test_an_expired_token_is_replaced_by_running_the_command_again(mailbox: Mailbox, tmp_path: Path) -> None:
    mailbox.append(*many_reports(1))
    command = token_command(tmp_path, mailbox.server, -600, 600)  # expired first, then a good one
    done = run(
        [
            *mailbox.args("--once", "--auth", "xoauth2", "--oauth2-token-command", command),
            "--database",
            f"sqlite:///{tmp_path / 's.sqlite3'}",
        ]
    )
    assert done.returncode == 0, done.stderr
    assert "login refused: trying once more with a new token" in done.stderr
    assert (tmp_path / "calls").read_text() == "2"
    assert mailbox.count(mailbox.processed) == 1


def test_a_rejected_token_is_one_line_exit_75_and_nothing_is_marked(mailbox: Mailbox, tmp_path: Path) -> None:
    mailbox.append(*many_reports(1))
    command = token_command(tmp_path, mailbox.server, -600)  # always expired
    done = run(
        [
            *mailbox.args("--once", "--auth", "xoauth2", "--oauth2-token-command", command),
            "--database",
            f"sqlite:///{tmp_path / 's.sqlite3'}",
        ]
    )
    assert done.returncode == 75
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "IMAP login" in errors[0] and "failed" in errors[0]
    assert mailbox.count(mailbox.inbox) == 1 and mailbox.count(mailbox.processed) == 0


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo 'no token for you' >&2; exit 3", "exited 3: no token for you"),
        ("sleep 30", "did not finish within 2s"),
        ("echo 'this is {garbage}'", "gave no usable access token"),
        ("echo '{\"expires_in\": 3600}'", "JSON without an access_token"),
    ],
)
def test_a_token_command_that_fails_hangs_or_prints_garbage(
    command: str, expected: str, mailbox: Mailbox, tmp_path: Path
) -> None:
    mailbox.append(*many_reports(1))
    began = time.monotonic()
    done = run(
        [
            *mailbox.args("--once", "--auth", "oauthbearer", "--oauth2-token-command", command),
            "--database",
            f"sqlite:///{tmp_path / 's.sqlite3'}",
        ],
        ABUSEPIPE_OAUTH2_TOKEN_TIMEOUT="2",
    )
    assert time.monotonic() - began < 30
    assert done.returncode == 75, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if "error" in line]) == 1
    assert mailbox.count(mailbox.inbox) == 1


def test_entra_client_credentials_against_a_loopback_token_endpoint(mailbox: Mailbox, tmp_path: Path) -> None:
    authority = trustme.CA()
    leaf = authority.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    state = EntraState(
        tenant="11111111-2222-3333-4444-555555555555",
        client_id="app-id",
        client_secret="s3cret",
        issue=lambda scope: mint(mailbox.server),
    )
    server = serve_entra(state, leaf)
    try:
        mailbox.append(*many_reports(1))
        secret = tmp_path / "secret"
        secret.write_text("s3cret\n")
        args = [
            *mailbox.args(
                "--once", "--auth", "xoauth2", "--oauth2-tenant", state.tenant, "--oauth2-client-id", "app-id"
            ),
            "--database",
            f"sqlite:///{tmp_path / 's.sqlite3'}",
        ]
        extra = {
            "ABUSEPIPE_OAUTH2_AUTHORITY": f"https://127.0.0.1:{server.server_port}",
            "ABUSEPIPE_OAUTH2_CA_FILE": str(ca_file),
        }
        done = run([*args, "--oauth2-client-secret-file", str(secret)], **extra)
        assert done.returncode == 0, done.stderr
        assert mailbox.count(mailbox.processed) == 1
        grant = state.grants[-1]
        assert grant["grant_type"] == ["client_credentials"]
        assert grant["scope"] == ["https://outlook.office365.com/.default"]
        mailbox.append(*many_reports(1))
        wrong = run(args, ABUSEPIPE_OAUTH2_CLIENT_SECRET="wrong", **extra)
        assert wrong.returncode == 75 and "Traceback" not in wrong.stderr
        assert "Entra ID refused the client credentials: invalid_client AADSTS7000215" in wrong.stderr
        assert mailbox.count(mailbox.inbox) == 1
    finally:
        server.shutdown()


# --- Microsoft Graph (a loopback stand-in) ------------------------------------------------------------


def graph(
    state: GraphState, server_port: int, tmp_path: Path, *extra: str, **environment: str
) -> subprocess.CompletedProcess[str]:
    return run(
        [
            "graph",
            "--once",
            "--mailbox",
            state.mailbox,
            "--oauth2-token-command",
            f"echo {state.token}",
            "--database",
            f"sqlite:///{tmp_path / 's.sqlite3'}",
            *extra,
        ],
        ABUSEPIPE_GRAPH_URL=f"http://127.0.0.1:{server_port}/v1.0",
        **environment,
    )


@pytest.fixture
def graph_server() -> tuple[GraphState, int]:
    state = GraphState(token="graph-token-" + "x" * 20)
    server = serve_graph(state)
    yield state, server.server_port
    server.shutdown()


def test_graph_pages_fetches_and_moves_once_durable(
    graph_server: tuple[GraphState, int], tmp_path: Path
) -> None:
    state, port = graph_server
    for raw in many_reports(120):  # three pages of 50
        state.deliver(raw)
    state.deliver(b"Subject: hello\r\n\r\nnot a report\r\n")
    state.throttle = {"list": 1, "value": 2}
    done = graph(state, port, tmp_path)
    assert done.returncode == 0, done.stderr
    assert count_rows(f"sqlite:///{tmp_path / 's.sqlite3'}") == 120
    assert len(state.folder("Processed")) == 120 and len(state.folder("Rejected")) == 1
    assert not state.folders["inbox"]
    assert sum("skip=" in path for _, path in state.requests) >= 2  # it followed @odata.nextLink
    assert done.stderr.count("Microsoft Graph answered 429: waiting 1s") == 3
    assert "graph-token" not in done.stderr


def test_graph_crash_between_write_and_move_writes_again_harmlessly(
    graph_server: tuple[GraphState, int], tmp_path: Path
) -> None:
    state, port = graph_server
    for raw in many_reports(3):
        state.deliver(raw)
    state.fail_moves = 1
    first = graph(state, port, tmp_path)
    assert first.returncode == 75 and "Traceback" not in first.stderr  # stored, not moved
    assert len(state.folders["inbox"]) == 3
    second = graph(state, port, tmp_path)
    assert second.returncode == 0, second.stderr
    assert len(state.folder("Processed")) == 3 and not state.folders["inbox"]
    assert count_rows(f"sqlite:///{tmp_path / 's.sqlite3'}") == 3  # written twice, stored once


def test_graph_refused_token_and_unreachable_service(
    graph_server: tuple[GraphState, int], tmp_path: Path
) -> None:
    state, port = graph_server
    state.deliver(many_reports(1)[0])
    refused = run(
        [
            "graph",
            "--once",
            "--mailbox",
            state.mailbox,
            "--oauth2-token-command",
            "echo wrong-token",
            "--database",
            f"sqlite:///{tmp_path / 's.sqlite3'}",
        ],
        ABUSEPIPE_GRAPH_URL=f"http://127.0.0.1:{port}/v1.0",
    )
    assert refused.returncode == 75 and "401 InvalidAuthenticationToken" in refused.stderr
    assert "Traceback" not in refused.stderr and len(state.folders["inbox"]) == 1
    unreachable = graph(state, 9, tmp_path)
    assert unreachable.returncode == 75 and "cannot reach Microsoft Graph" in unreachable.stderr
