"""`abusepipe smtp` as a real server process, driven by Python's smtplib as the real client."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from sinks import models as m
from sinks.kafka_config import KafkaSettings, TopicNames
from sinks.topics import create_topics
from tests.conftest import ROOT, OwnService, count_rows
from tests.mail import arf, forward, junk, many_reports

CMD = [sys.executable, "-m", "abusepipe.cli"]
RECIPIENTS = ["abuse@example.net", "phish@example.net=fraud", "trap@example.net=trap"]


def crlf(data: bytes) -> bytes:
    """What an SMTP client puts on the wire (smtplib sends bytes unchanged)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, tmp: Path, database: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.database = database
        self.log_path = tmp / f"smtp-{self.port}.log"
        command = [*CMD, "smtp", "--listen", f"127.0.0.1:{self.port}", "--database", database, *args]
        for recipient in RECIPIENTS:
            command += ["--recipient", recipient]
        environment = {**(env or os.environ), "PYTHONPATH": str(ROOT)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stderr=log, env=environment, cwd=tmp)
        deadline = time.monotonic() + 60
        while "listening on" not in self.log():
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=120)

    def count(self, table: object = m.reports) -> int:
        return count_rows(self.database, table)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: str, database: str | None = None, env: dict[str, str] | None = None) -> Server:
        server = Server(tmp_path, database or f"sqlite:///{tmp_path / 'store.sqlite3'}", *args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_recipients_routes_and_replies(serve: Callable[..., Server]) -> None:
    server = serve("--metrics-listen", f"127.0.0.1:{(metrics := free_port())}")
    with server.client() as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("a@x.example", ["postmaster@elsewhere.example"], crlf(forward([junk()])))
        code, text = refused.value.recipients["postmaster@elsewhere.example"]
        assert code == 550 and b"no such abuse address" in text  # never a relay
        assert client.sendmail("a@x.example", ["Abuse@Example.NET"], crlf(forward([junk()]))) == {}
        refused_one = client.sendmail(
            "a@x.example",
            ["phish@example.net", "abuse@example.net"],
            crlf(arf("abuse", junk(extra=[("X-N", "1")]))),
        )
        assert refused_one == {
            "abuse@example.net": (
                452,
                b"4.5.3 one kind of recipient per message: send to this one separately",
            )
        }
        assert client.sendmail("a@x.example", ["trap@example.net"], crlf(junk(extra=[("X-N", "2")]))) == {}
        assert client.mail("a@x.example")[0] == 250
        assert client.rcpt("abuse@example.net")[0] == 250
        reply = client.data(b"Subject: hello\r\n\r\nnot a report\r\n")
        assert reply == (250, b"2.0.0 kept, but not an abuse report: dead-lettered")
    engine = create_engine(server.database)
    with engine.connect() as connection:
        kinds = sorted(connection.execute(select(m.reports.c.format, m.reports.c.feedback_type)).all())
    engine.dispose()
    assert kinds == [("arf", "fraud"), ("forward-attachment", "abuse"), ("trap", "abuse")]
    assert server.count(m.deadletters) == 1
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read().decode()
    for line in (
        'abusepipe_intake_received_total{intake="smtp"} 4.0',
        'abusepipe_intake_reports_total{intake="smtp"} 3.0',
        'abusepipe_intake_rejected_total{intake="smtp"} 1.0',
        'abusepipe_intake_dead_lettered_total{intake="smtp"} 1.0',
        'abusepipe_intake_retried_total{intake="smtp"} 0.0',
    ):
        assert line in metrics, metrics
    assert server.stop() == 0
    log = server.log()
    assert log.count('"outcome": "stored"') == 3 and log.count('"outcome": "dead-lettered"') == 1
    assert '"message_id": "fwd-1@reporter.example"' in log
    assert "stopped: 4 received, 3 reports, 1 rejected, 1 dead-lettered, 0 retried" in log


def test_size_limit(serve: Callable[..., Server]) -> None:
    server = serve("--max-size", "20000")
    big = crlf(forward([junk()])) + (b"x" * 76 + b"\r\n") * 400
    with server.client() as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:  # SIZE= announced in MAIL FROM
            client.sendmail("a@x.example", ["abuse@example.net"], big)
        assert declared.value.smtp_code == 552
    with server.client() as client:
        client.ehlo()
        client.esmtp_features.pop("size", None)  # a client that does not announce the size
        with pytest.raises(smtplib.SMTPDataError) as sent:
            client.sendmail("a@x.example", ["abuse@example.net"], big)
        assert sent.value.smtp_code == 552
    assert server.count() == 0


def test_lmtp_answers_once_per_recipient(tmp_path: Path, serve: Callable[..., Server]) -> None:
    server = serve("--lmtp")
    with smtplib.LMTP("127.0.0.1", server.port, timeout=60) as client:
        assert client.ehlo()[0] == 250  # LHLO
        assert client.sendmail("a@x.example", ["abuse@example.net"], crlf(forward([junk()]))) == {}
    # Two recipients: two replies to one DATA (smtplib reads only the first; a raw dialogue reads both).
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as raw:
        stream = raw.makefile("rwb")
        stream.readline()
        for command in (b"LHLO mx.example", b"MAIL FROM:<a@x.example>", b"RCPT TO:<abuse@example.net>"):
            stream.write(command + b"\r\n")
            stream.flush()
            while (line := stream.readline())[3:4] == b"-":
                pass
            assert line.startswith(b"250"), line
        stream.write(b"RCPT TO:<ABUSE@example.net>\r\nDATA\r\n")
        stream.flush()
        assert stream.readline().startswith(b"250")
        assert stream.readline().startswith(b"354")
        stream.write(crlf(forward([junk(extra=[("X-N", "2")])])) + b".\r\n")
        stream.flush()
        assert [stream.readline(), stream.readline()] == [b"250 2.0.0 stored: 1 report(s)\r\n"] * 2
    assert server.count() == 2


def test_starttls_with_a_test_certificate(tmp_path: Path, serve: Callable[..., Server]) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    server = serve(
        "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"), "--require-starttls"
    )
    with server.client() as client:
        client.ehlo()
        assert client.has_extn("starttls")
        code, _ = client.mail("a@x.example")
        assert code == 530  # nothing before STARTTLS
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with server.client() as client:
        client.starttls(context=context)
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sendmail("a@x.example", ["abuse@example.net"], crlf(forward([junk()]))) == {}
    assert server.count() == 1


@pytest.mark.integration
def test_451_while_postgres_is_down_then_delivered(
    own_postgres: tuple[str, OwnService], serve: Callable[..., Server]
) -> None:
    url, control = own_postgres
    server = serve(database=url)
    message = crlf(forward([junk()]))
    with server.client() as client:
        assert (
            client.sendmail("a@x.example", ["abuse@example.net"], crlf(forward([junk(extra=[("X-N", "0")])])))
            == {}
        )
    control("stop")
    with server.client() as client:
        with pytest.raises(smtplib.SMTPDataError) as later:
            client.sendmail("a@x.example", ["abuse@example.net"], message)
        assert later.value.smtp_code == 451
    control("resume")
    with server.client() as client:  # the sender's retry
        assert client.sendmail("a@x.example", ["abuse@example.net"], message) == {}
    assert server.count() == 2
    assert server.stop() == 0
    assert '"outcome": "retry"' in server.log() and "1 retried" in server.log()


@pytest.mark.integration
def test_451_while_the_broker_is_down_then_delivered(
    own_broker: OwnService, postgres_url: str, tmp_path: Path, serve: Callable[..., Server]
) -> None:
    bootstrap: str = own_broker.address
    name = f"smtp{os.getpid()}{int(time.time())}"
    kafka = KafkaSettings(
        (bootstrap,), TopicNames(f"{name}.r", f"{name}.e", f"{name}.d"), group=f"{name}.g", delivery_timeout=5
    )
    create_topics(kafka, partitions=2)
    env = {**os.environ, **kafka.environment(), "ABUSEPIPE_DATABASE_URL": postgres_url}
    server = serve(env=env)
    message = crlf(forward([junk()]))
    own_broker("stop")
    with server.client() as client:
        with pytest.raises(smtplib.SMTPDataError) as later:
            client.sendmail("a@x.example", ["abuse@example.net"], message)
        assert later.value.smtp_code == 451
    own_broker("resume")
    # The sender retries as MTAs do until the broker takes it (a few seconds after its restart).
    deadline = time.monotonic() + 90
    while True:
        try:
            with server.client() as client:
                assert client.sendmail("a@x.example", ["abuse@example.net"], message) == {}
            break
        except smtplib.SMTPDataError as retry:
            assert retry.smtp_code == 451 and time.monotonic() < deadline, server.log()
            time.sleep(2)
    assert server.stop() == 0
    consumer = subprocess.Popen(
        [*CMD, "consume"], env={**env, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                if count_rows(postgres_url) >= 1:
                    break
            except SQLAlchemyError:  # the consumer has not created the tables yet
                pass
            assert time.monotonic() < deadline and consumer.poll() is None
            time.sleep(0.3)
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0
        assert count_rows(postgres_url) == 1
    finally:
        if consumer.poll() is None:
            consumer.kill()


@pytest.mark.integration
def test_soak_2000_messages_from_4_clients_each_stored_once(
    postgres_url: str, serve: Callable[..., Server]
) -> None:
    server = serve(database=postgres_url)
    messages = [crlf(raw) for raw in many_reports(2000)]
    errors: list[BaseException] = []

    def client_thread(part: list[bytes]) -> None:
        try:
            with server.client() as client:
                for raw in part:
                    assert client.sendmail("fbl@isp.example", ["abuse@example.net"], raw) == {}
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client_thread, args=(messages[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors[:3]
    assert server.count() == 2000
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        assert (
            connection.execute(select(func.count(func.distinct(m.reports.c.input_sha256)))).scalar_one()
            == 2000
        )
        assert (
            connection.execute(
                select(func.sum(m.offenders.c.reports)).where(m.offenders.c.kind == "ip")
            ).scalar_one()
            == 2000
        )
    engine.dispose()
    assert server.stop() == 0
    assert "stopped: 2000 received, 2000 reports, 0 rejected, 0 dead-lettered, 0 retried" in server.log()


def test_lines_longer_than_rfc_5321_allows_are_kept(serve: Callable[..., Server]) -> None:
    """Junk quoted in reports has multi-KB lines; refusing them would lose the report at the sender."""
    server = serve()
    long_line = b"X-Long: " + b"y" * 20000 + b"\r\n"
    with server.client() as client:
        raw = crlf(forward([junk()]))
        assert client.sendmail("a@x.example", ["abuse@example.net"], long_line + raw) == {}
    assert server.count() == 1
