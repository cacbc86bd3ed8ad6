"""Our own samples for what the corpus lacks, built in code so each case states exactly what it tests."""

from __future__ import annotations

import json

import pytest

from abusepipe.errors import ReportRejected
from parsers import TrustPolicy
from tests.conftest import SAMPLES, one, parse
from tests.mail import JUNK_HEADERS, arf, forward, inline_forward, junk, message

TENANT = "cba1030d-af07-487f-8f7b-30d91dbfbfeb"
RECIPIENT_TENANT = "84df9e7f-e9f6-40af-b435-aaaaaaaaaaaa"


# --- ARF and its feedback types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arf_type", "expected"),
    [
        ("abuse", "abuse"),
        ("fraud", "fraud"),
        ("virus", "virus"),
        ("other", "other"),
        ("not-spam", "not-spam"),
        ("opt-out", "opt-out"),
        ("Abuse", "abuse"),
        ("something-new", "other"),
    ],
)
def test_arf_feedback_types(arf_type: str, expected: str) -> None:
    report = one(arf(arf_type, junk(), fields=[("Source-IP", "8.8.4.4")]))
    assert report.format == "arf"
    assert report.feedback_type == expected
    assert report.source.ip == "8.8.4.4"
    assert report.original.subject == "Grüße und Uhren"
    assert report.original.message_id == "junk-1@watches.example.com"
    assert report.original.from_domain == "watches.example.com"
    assert report.original.url_domains == ["example.co.uk"]
    assert report.reporter.address == "fbl@isp.example"
    assert report.reporter.user_agent == "TestFBL/1.0"


def test_arf_source_ip_is_cross_checked_against_received() -> None:
    report = one(arf("abuse", junk(), fields=[("Source-IP", "8.8.4.4")]))
    checks = [e.detail for e in report.evidence if e.method == "cross-check"]
    assert checks == ["equals the Received handoff IP"]
    assert report.source.handoff_ip == "8.8.4.4"
    assert report.source.hints == ["1.2.3.4"]  # below the boundary: attacker-controlled, only a hint


def test_arf_without_source_ip_uses_the_received_walk() -> None:
    report = one(arf("abuse", junk()))
    assert report.source.ip == "8.8.4.4"
    assert report.source.rdns == "host-8-8-4-4.spam.example"
    assert [e.method for e in report.evidence][:1] == ["received-walk"]


def test_arf_wrapped_in_multipart_mixed_with_headers_only_original() -> None:
    report = one(arf("abuse", junk(), wrapper="mixed", headers_only=True, fields=[("Source-IP", "8.8.4.4")]))
    assert report.format == "arf"
    assert report.original.headers_only
    assert report.original.subject == "Grüße und Uhren"


def test_arf_missing_feedback_type_is_a_defect_not_a_failure() -> None:
    raw = arf("abuse", junk()).replace(b"Feedback-Type: abuse\r\n", b"")
    report = one(raw)
    assert report.feedback_type == "abuse"
    assert "ARF Feedback-Type missing: assumed abuse" in report.defects


def test_spf_auth_failure() -> None:
    raw = arf(
        "auth-failure",
        junk(),
        headers_only=True,
        fields=[
            ("Auth-Failure", "spf"),
            ("SPF-DNS", "txt : watches.example.com : v=spf1 -all"),
            ("Source-IP", "8.8.4.4"),
            ("Reported-Domain", "watches.example.com"),
            ("Delivery-Result", "reject"),
            ("Identity-Alignment", "none"),
        ],
    )
    report = one(raw)
    assert report.feedback_type == "auth-failure"
    assert report.feedback is not None
    assert report.feedback.auth_failure == "spf"
    assert report.feedback.spf_dns is not None
    assert report.feedback.delivery_result == "reject"
    assert report.feedback.reported_domain == ["watches.example.com"]


def test_xarf_v4_json() -> None:
    raw = arf("xarf", junk())
    payload = json.dumps(
        {
            "Version": "4",
            "Report": {"ReportClass": "Content", "ReportType": "Phishing", "SourceIp": "8.8.4.4"},
        }
    )
    raw = raw.replace(b"This is an email abuse report.", b"see json")
    from email import message_from_bytes
    from email.mime.application import MIMEApplication
    from email.policy import compat32

    msg = message_from_bytes(raw, policy=compat32)
    msg.attach(MIMEApplication(payload.encode(), "json"))
    report = one(msg.as_bytes())
    assert report.format == "xarf"
    assert report.feedback_type == "fraud"
    assert report.feedback is not None and report.feedback.report_type == "Phishing"


# --- Microsoft JMRP and reporting mailbox -----------------------------------------------------------------


def test_jmrp_wrapped_uses_subject_ip() -> None:
    inner = junk(extra=[("X-HmXmrOriginalRecipient", "someone@hotmail.com")])
    raw = forward([inner], sender="staff@hotmail.com", subject="complaint about message from 8.8.4.4")
    report = one(raw)
    assert report.format == "jmrp"
    assert report.source.ip == "8.8.4.4"
    assert report.reporter.address == "staff@hotmail.com"


def _exo_junk(*extra: tuple[str, str]) -> bytes:
    """Junk received into a Microsoft-hosted mailbox from another tenant via EOP."""
    headers = [
        (
            "Received",
            "from SJ2P.NAMP223.PROD.OUTLOOK.COM (2603:10b6:a03:58f::17) by LV3P.NAMP223.PROD.OUTLOOK.COM "
            "with HTTPS; Sat, 28 Oct 2023 13:30:18 +0000",
        ),
        (
            "Received",
            "from CO1NAM11FT004.eop-nam11.prod.protection.outlook.com (2603:10b6:a03:39c:cafe::25) by "
            "SJ0PR03CA0335.outlook.office365.com (2603:10b6:a03:39c::10) with Microsoft SMTP Server id 15.20 via "
            "Frontend Transport; Sat, 28 Oct 2023 13:30:17 +0000",
        ),
        (
            "Authentication-Results",
            "spf=fail (sender IP is 40.95.78.166) smtp.helo=x.outbound.protection."
            "outlook.com; dkim=none (message not signed) header.d=none;dmarc=none action=none header.from=evil."
            "onmicrosoft.com;compauth=fail reason=001",
        ),
        (
            "Received-SPF",
            "Fail (protection.outlook.com: domain of x does not designate 40.95.78.166 as permitted "
            "sender) receiver=protection.outlook.com; client-ip=40.95.78.166; helo=x;",
        ),
        (
            "Received",
            "from GBR01-LO2-obe.outbound.protection.outlook.com (40.95.78.166) by CO1NAM11FT004.mail."
            "protection.outlook.com (10.13.175.89) with Microsoft SMTP Server id 15.20 via Frontend Transport; Sat",
        ),
        (
            "Received",
            "from attacker.example (attacker.example [45.79.204.163]) by SOMETENANT.outlook.com with "
            "ESMTP; Sat",
        ),
        ("From", "Phisher <x@evil.onmicrosoft.com>"),
        ("Subject", "Your account"),
        ("Message-ID", "<p1@evil.onmicrosoft.com>"),
        ("X-MS-Exchange-CrossTenant-Id", RECIPIENT_TENANT),
        (
            "X-Forefront-Antispam-Report",
            "CIP:40.95.78.166;CTRY:GB;LANG:de;SCL:9;SRV:;IPV:NLI;SFV:SPM;H:x;PTR:x;CAT:PHSH;DIR:INB;",
        ),
        *extra,
    ]
    return message(headers)


def test_exo_connector_header_names_sending_tenant_and_origin() -> None:
    raw = _exo_junk(
        (
            "X-MS-Exchange-CrossTenant-OriginalAttributedTenantConnectingIp",
            f"TenantId={TENANT};Ip=[45.79.204.163];Helo=[evil.onmicrosoft.com]",
        )
    )
    report = one(raw, trap=True)
    assert report.source.platform == "exchange-online"
    assert report.source.handoff_ip == "40.95.78.166"
    assert report.source.tenant_id == TENANT
    assert report.source.ip == "45.79.204.163"
    methods = {e.method for e in report.evidence}
    assert {"exo-connector-header", "microsoft-outbound-range", "eop-cross-check"} <= methods


def test_exo_recipient_tenant_id_is_never_taken_as_the_sender() -> None:
    report = one(_exo_junk(), trap=True)
    assert report.source.platform == "exchange-online"
    assert report.source.tenant_id is None  # the CrossTenant-Id on this copy is the recipient's
    assert report.source.ip == "40.95.78.166"


def test_exo_untrusted_sender_verdict_gives_origin() -> None:
    raw = _exo_junk(
        (
            "X-Forefront-Antispam-Report-Untrusted",
            "CIP:45.79.204.163;CTRY:US;LANG:de;SCL:9;SRV:;IPV:NLI;SFV:SPM;H:x;PTR:x;CAT:OSPM;DIR:OUT;",
        ),
        ("DKIM-Signature", "v=1; a=rsa-sha256; d=evil.onmicrosoft.com; s=selector1; b=x"),
    )
    report = one(raw, trap=True)
    assert report.source.ip == "45.79.204.163"
    assert report.source.tenant_domain == "evil.onmicrosoft.com"
    assert {"exo-sender-verdict", "exo-onmicrosoft-dkim"} <= {e.method for e in report.evidence}
    assert report.original.exchange[1].direction == "OUT"


def test_exo_authenticated_mailbox_keeps_the_handoff_ip() -> None:
    raw = _exo_junk(
        (
            "X-Forefront-Antispam-Report-Untrusted",
            "CIP:255.255.255.255;CTRY:;LANG:en;SCL:8;SRV:;IPV:NLI;SFV:SPM;H:x;PTR:;CAT:OSPM;DIR:OUT;",
        )
    )
    report = one(raw, trap=True)
    assert report.source.ip == "40.95.78.166"
    assert any("255.255.255.255" in (e.detail or "") for e in report.evidence)


def test_exo_mail_that_left_microsoft_uses_crosstenant_headers() -> None:
    headers = [
        (
            "Received",
            "from mail-db8eur05on2107.outbound.protection.outlook.com (mail-db8.outbound.protection."
            "outlook.com [40.107.20.107]) by mx.isp.example (Postfix) with ESMTPS id 1; Mon",
        ),
        ("X-MS-Exchange-CrossTenant-Id", TENANT.upper()),
        ("X-OriginatorOrg", "Sender.Example"),
        (
            "X-Forefront-Antispam-Report",
            "CIP:203.0.113.200;CTRY:;LANG:en;SCL:1;SRV:;IPV:NLI;SFV:NSPM;H:x;DIR:OUT;",
        ),
        ("From", "a@sender.example"),
        ("Subject", "hi"),
    ]
    report = one(message(headers), trap=True)
    assert report.source.platform == "exchange-online"
    assert report.source.tenant_id == TENANT
    assert report.source.tenant_domain == "sender.example"
    assert report.source.handoff_ip == "40.107.20.107"


def test_non_microsoft_sender_into_microsoft_mailbox_is_not_exchange_online() -> None:
    raw = _exo_junk().replace(b"40.95.78.166", b"209.85.221.41")
    report = one(raw, trap=True)
    assert report.source.platform is None
    assert report.source.ip == "209.85.221.41"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Phishing: Your account", "fraud"),
        ("junk: offer", "abuse"),
        ("Not junk: newsletter", "not-spam"),
        ("2|not junk", "not-spam"),
        ("3|x", "fraud"),
    ],
)
def test_ms_submission_subjects(subject: str, expected: str) -> None:
    report = one(forward([_exo_junk()], subject=subject, to="reports@contoso.example"))
    assert report.format == "ms-submission"
    assert report.feedback_type == expected
    assert report.reporter.address == "alice@reporter.example"
    assert report.source.platform == "exchange-online"


def test_ms_submission_legacy_subject_splits_on_first_four_pipes() -> None:
    subject = "1|0a1b2c3d-0000-4000-8000-000000000001|203.0.113.9|x@evil.example|(Win|a|prize)"
    report = one(forward([junk()], subject=subject))
    assert report.format == "ms-submission"
    assert report.feedback_type == "abuse"
    assert report.source.ip == "203.0.113.9"
    assert report.feedback is not None
    assert report.feedback.extra["subject"] == "(Win|a|prize)"
    assert report.feedback.extra["from-address"] == "x@evil.example"


def test_ms_submission_with_attached_msg() -> None:
    data = (SAMPLES / "mailparser_outlook_newsletter.msg").read_bytes()
    report = one(forward([("reported.msg", data)], subject="Junk: newsletter"))
    assert report.format == "ms-submission"
    assert report.original.from_domain == "w-vwa.de"
    assert report.source.ip == "195.189.93.103"


def test_admin_submission_result_is_rejected() -> None:
    raw = forward([junk()], sender="submissions@messaging.microsoft.com", subject="Phishing: result")
    with pytest.raises(ReportRejected, match="submission result"):
        parse(raw)


# --- forwards ---------------------------------------------------------------------------------------------


def test_msg_attached_to_eml_is_a_report() -> None:
    data = (SAMPLES / "mailparser_outlook_newsletter.msg").read_bytes()
    report = one(forward([("junk.msg", data)]))
    assert report.format == "forward-attachment"
    assert report.reporter.address == "alice@reporter.example"
    assert report.original.from_domain == "w-vwa.de"
    assert report.source.ip == "195.189.93.103"
    assert len(report.original.attachments) == 5


def test_several_attached_junk_mails_give_several_reports() -> None:
    second = junk(headers=[(k, v.replace("junk-1", "junk-2")) for k, v in JUNK_HEADERS])
    reports = parse(forward([junk(), second, ("third.eml", junk())]))
    assert [r.format for r in reports] == ["forward-attachment"] * 3
    assert len({r.report_id for r in reports}) == 3
    assert [r.original.message_id for r in reports] == [
        "junk-1@watches.example.com",
        "junk-2@watches.example.com",
        "junk-1@watches.example.com",
    ]


def test_forward_to_phish_address_is_fraud() -> None:
    report = one(forward([junk()], to="phish@isp.example"))
    assert report.feedback_type == "fraud"


def test_nested_forward_reports_the_innermost_message() -> None:
    middle = forward([junk()], subject="Fwd: spam", sender="carol@reporter.example")
    report = one(forward([middle]))
    assert report.original.message_id == "junk-1@watches.example.com"
    assert any("forward of a forward" in d for d in report.defects)


@pytest.mark.parametrize(
    ("sample", "sender_domain", "subject"),
    [
        ("email-forward-parser_inline_gmail_en_body.txt", "acme.com", "Integer consequat non purus"),
        ("email-forward-parser_inline_new-outlook_de_body.txt", "acme.com", "Integer consequat non purus"),
        ("email-forward-parser_inline_outlook-live_body.txt", "acme.com", "Integer consequat non purus"),
        ("email-forward-parser_inline_outlook-2019-mac_quoted_body.txt", "acme.com", "look at this"),
    ],
)
def test_inline_forwards(sample: str, sender_domain: str, subject: str) -> None:
    body = (SAMPLES / sample).read_text(encoding="utf-8-sig")
    report = one(inline_forward(body))
    assert report.format == "forward-inline"
    assert report.original.from_domain == sender_domain
    assert report.original.subject == subject
    assert report.source.ip is None  # no Received chain: never invent an IP
    assert report.reporter.address == "bob@reporter.example"


# --- trap mode, trust and rejection ---------------------------------------------------------------------


def test_trap_mode_reports_the_message_itself() -> None:
    report = one(junk(extra=[("Delivered-To", "trap42@traps.example")]), trap=True)
    assert report.format == "trap"
    assert report.reporter.address == "trap42@traps.example"
    assert report.source.ip == "8.8.4.4"


def test_operator_trusted_network_moves_the_boundary() -> None:
    relay = (
        "Received",
        "from relay.isp.example (relay.isp.example [5.6.7.8]) by mbox.isp.example with ESMTP; Mon",
    )
    headers = [relay, *[(k, v.replace("8.8.4.4", "9.9.9.9")) for k, v in JUNK_HEADERS]]
    headers.insert(1, ("Received", "from x (x [8.8.4.4]) by relay.isp.example with ESMTP; Mon"))
    raw = message(headers)
    assert one(raw, trap=True).source.ip == "5.6.7.8"
    trusted = one(raw, trap=True, trust=TrustPolicy.from_cidrs(["5.6.7.0/24"]))
    assert trusted.source.ip == "8.8.4.4"


def test_plain_mail_is_rejected_outside_trap_mode() -> None:
    with pytest.raises(ReportRejected, match="not an abuse report"):
        parse(junk())


def test_bounce_is_rejected_with_its_reason() -> None:
    raw = (SAMPLES / "malformed" / "mailparser_malformed_2_dsn_truncated-rfc822-headers.eml").read_bytes()
    with pytest.raises(ReportRejected, match="delivery-status"):
        parse(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty input"),
        (b"\x00\x01garbage", "no mail headers"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1broken", ".msg"),
    ],
)
def test_garbage_is_rejected_cleanly(raw: bytes, reason: str) -> None:
    with pytest.raises(ReportRejected, match=reason):
        parse(raw)


def test_size_limit_rejects_before_parsing() -> None:
    from parsers import ParseLimits

    with pytest.raises(ReportRejected, match="over the limit"):
        parse(junk(), trap=True, limits=ParseLimits(max_message_bytes=100))


def test_header_injection_in_encoded_words_is_flattened() -> None:
    raw = message(
        [
            ("From", "=?utf-8?b?RXZpbA0KQmNjOiB2aWN0aW0=?= <evil@bad.example>"),
            ("Subject", "=?utf-8?q?line1=0D=0Aline2?="),
            ("Received", JUNK_HEADERS[1][1]),
        ]
    )
    report = one(raw, trap=True)
    assert report.original.subject == "line1 line2"
    assert report.original.from_name is not None and "\n" not in report.original.from_name
