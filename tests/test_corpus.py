"""Conformance over ../shared/corpus and the bulk junk (skipped where absent: their licences keep them out)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from abusepipe.errors import ReportRejected
from parsers import parse_message
from parsers.received import parse_ip
from tests.conftest import BULK, CORPUS, requires_bulk, requires_corpus

REPORT_KINDS = ("arf", "auth-failure", "fbl-provider", "xarf", "spamcop", "forwarded")


def _files(*kinds: str) -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for kind in kinds for p in (CORPUS / kind).iterdir() if p.suffix in (".eml", ".msg"))


def _has_ip_source(raw: bytes) -> bool:
    """The mail states a usable origin: a Received hop with an IP, Source-IP, or a SpamCop/JMRP subject."""
    lowered = raw.lower()
    return any(
        marker in lowered
        for marker in (b"source-ip:", b"received: from", b"complaint about message from", b"[spamcop (")
    )


@requires_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("path", _files(*REPORT_KINDS), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_report_samples_yield_reports_with_a_sensible_source(path: Path) -> None:
    raw = path.read_bytes()
    reports = parse_message(raw)
    assert reports
    for report in reports:
        assert report.schema_version == 1
        assert report.format and report.feedback_type
        if report.source.ip is not None:
            ip = parse_ip(report.source.ip)
            assert ip is not None and not ip.is_loopback and not ip.is_unspecified
    if _has_ip_source(raw) and path.name not in _NO_IP:
        assert any(r.source.ip for r in reports), "the mail names an origin IP but none was attributed"


# Samples whose only IPs are masked (xxx) or that carry no Received chain with an address.
_NO_IP = {
    "sisimai_arf-11_arf-agent-abuse.eml",
    "sisimai_arf-12_opt-out_rfc822-header.eml",
    "php-bounce-zoon_fbl_mailru.eml",
    "sisimai_fbl_yahoo-via-amazonses_arf-14.eml",
    "sisimai_fbl_yahoo_arf-02.eml",
    "abuseio_xarf_netcraft_phishing_6.eml",
    "ovh-cerberus_xarf_blocklistde_phishing_v0.1.eml",
    "ovh-cerberus_xarf_cyscon_malware.eml",
    "csirtg_forward_nested_rfc822_base64.eml",
    "csirtg_forward_thunderbird_inline-header-block_plus_rfc822.eml",
    "eml-analyzer_outer_with_embedded.msg",
    "php-imap_forward_exchange_rfc822_no-disposition.eml",
    "php-imap_forward_four_nested_rfc822.eml",
}


@requires_corpus
@pytest.mark.corpus
def test_exchange_online_samples_in_trap_mode() -> None:
    expected = {
        "phishingpot_exo-origin_onmicrosoft_scl9_1695.eml": (
            "cba1030d-af07-487f-8f7b-30d91dbfbfeb",
            "45.79.204.163",
        ),
        "phishingpot_exo-origin_nspm-out_2019.eml": ("0b01e999-3b05-41e4-8512-51f68ed7a1c4", None),
        "phishingpot_exo-origin_bec_spm-out_6386.eml": (None, "52.102.161.21"),
    }
    for name, (tenant, ip) in expected.items():
        (report,) = parse_message((CORPUS / "exchange-online" / name).read_bytes(), trap=True)
        assert report.source.platform == "exchange-online", name
        assert report.source.tenant_id == tenant, name
        if ip:
            assert report.source.ip == ip, name
    for name in (
        "phishingpot_exo-inbound_spm-inb_gmail_399.eml",
        "mailparser_onprem-exchange_bbva-phish.eml",
    ):
        (report,) = parse_message((CORPUS / "exchange-online" / name).read_bytes(), trap=True)
        assert report.source.platform is None, name


@requires_corpus
@pytest.mark.corpus
@pytest.mark.parametrize(
    "path", sorted((CORPUS / "malformed").glob("*")) if CORPUS.is_dir() else [], ids=lambda p: p.name
)
def test_malformed_never_raises(path: Path) -> None:
    raw = path.read_bytes()
    for trap in (False, True):
        try:
            reports = parse_message(raw, trap=trap)
        except ReportRejected as exc:
            assert exc.reason and "\n" not in exc.reason
        else:
            assert reports


@requires_bulk
@pytest.mark.corpus
def test_bulk_exchange_online_attribution() -> None:
    """The 37 bulk mails with the connector header must all name their sending tenant and real origin."""
    with_connector = 0
    attributed = 0
    platform = 0
    for path in sorted(BULK.glob("*.eml")):
        raw = path.read_bytes()
        (report,) = parse_message(raw, trap=True)
        platform += report.source.platform == "exchange-online"
        if b"OriginalAttributedTenantConnectingIp" in raw:
            with_connector += 1
            if report.source.tenant_id and report.source.ip and report.source.platform == "exchange-online":
                attributed += 1
    assert with_connector >= 30
    assert attributed == with_connector
    assert platform >= with_connector


@requires_corpus
@pytest.mark.corpus
def test_the_same_input_always_gives_the_same_reports() -> None:
    """report_id is the dedup key across runs and through Kafka: everything else must be as stable
    (a boundary the stdlib generator invented at random once changed attachment hashes)."""
    when = datetime(2026, 11, 29, tzinfo=UTC)
    checked = 0
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "MANIFEST.tsv"):
        raw = path.read_bytes()
        try:
            first = [r.model_dump_json() for r in parse_message(raw, received_at=when)]
        except ReportRejected:
            continue
        assert [r.model_dump_json() for r in parse_message(raw, received_at=when)] == first, path
        checked += 1
    assert checked > 50
