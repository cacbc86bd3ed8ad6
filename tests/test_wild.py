"""What the wild sends, from the formats' public descriptions: ARF that also says X-ARF, SpamCop's ARF,
IODEF-wrapped reports (RFC 5070/7970), whole messages forwarded as the message, inline forwards with the
original header block, the recipient's own forwarding relays, Exchange Online tenants that forward."""

from __future__ import annotations

from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.policy import compat32

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abusepipe.errors import ReportRejected
from parsers import ParseLimits, TrustPolicy, parse_message
from tests.conftest import BULK, one, parse, requires_bulk
from tests.mail import IODEF_2, JUNK_HEADERS, arf, iodef_document, iodef_mail, junk, message

# --- 1. ARF reports that also carry X-ARF: YES; SpamCop's ARF reports -------------------------------


def with_headers(raw: bytes, *headers: str) -> bytes:
    return "".join(f"{h}\r\n" for h in headers).encode() + raw


def test_arf_structure_wins_over_an_x_arf_header() -> None:
    raw = with_headers(arf("abuse", junk(), fields=[("Source-IP", "192.0.2.1")]), "X-ARF: YES")
    report = one(raw)
    assert (report.format, report.feedback_type, report.source.ip) == ("arf", "abuse", "192.0.2.1")
    assert any("X-ARF header on an ARF report" in d for d in report.defects)


def spamcop_arf(fields: list[tuple[str, str]], human: str) -> bytes:
    outer = MIMEMultipart("report", report_type="feedback-report")
    outer["From"] = "7340011@reports.spamcop.net"
    outer["To"] = "abuse@isp.example"
    outer["Subject"] = "[SpamCop (192.0.2.44) id:7340011]Cheap watches"
    outer["X-ARF"] = "YES"
    outer.attach(MIMEText(human))
    report = MIMEBase("message", "feedback-report")
    lines = [("Feedback-Type", "abuse"), ("User-Agent", "SpamCop/5.0"), ("Version", "1"), *fields]
    report.set_payload("".join(f"{k}: {v}\r\n" for k, v in lines))
    outer.attach(report)
    outer.attach(MIMEMessage(BytesParser(policy=compat32).parsebytes(junk())))
    return outer.as_bytes()


def test_spamcop_arf_reports_are_spamcop_reports() -> None:
    report = one(
        spamcop_arf([("Received-Date", "Mon, 1 Jun 2026 10:00:01 +0000"), ("Source-IP", "192.0.2.44")], "x\n")
    )
    assert (report.format, report.feedback_type, report.source.ip) == ("spamcop", "abuse", "192.0.2.44")
    assert report.feedback is not None and report.feedback.extra["spamcop-id"] == "7340011"
    assert report.feedback.arrival_date == "Mon, 1 Jun 2026 10:00:01 +0000"
    assert report.source.handoff_ip == "8.8.4.4"  # the Received walk of the attached junk, cross-checked


def test_spamcop_arf_without_source_ip_takes_the_email_from_line() -> None:
    human = "[ SpamCop V5.0.0 ]\nThis message is brief for your comfort.\n\nEmail from 192.0.2.45 / Mon, 1 Jun 2026 10:00:01 +0000\n"
    report = one(spamcop_arf([], human))
    assert (report.format, report.source.ip) == ("spamcop", "192.0.2.45")
    assert any(e.method == "spamcop-source" for e in report.evidence)


# --- 2. IODEF-wrapped reports ------------------------------------------------------------------------


def test_iodef_source_and_category_with_the_arf_report_it_carries() -> None:
    inner_arf = arf("abuse", junk(), fields=[("Source-IP", "8.8.4.4")]).decode()
    reports = parse(iodef_mail(iodef_document(record=inner_arf)))
    assert len(reports) == 1
    report = reports[0]
    assert (report.format, report.feedback_type, report.source.ip) == ("iodef", "abuse", "192.0.2.77")
    assert report.original.from_domain == "watches.example.com"  # the junk inside the ARF inside IODEF
    assert report.original.message_id == "junk-1@watches.example.com"
    assert report.source.handoff_ip == "8.8.4.4"
    assert report.reporter.address == "cert@csirt.example.com"
    assert report.feedback is not None
    assert report.feedback.extra["iodef-incident-id"] == "189493"
    assert report.feedback.category == "spam"
    assert any("carries an ARF report" in d for d in report.defects)
    assert any(e.method == "iodef-source" for e in report.evidence)


def test_iodef_2_phishing_with_the_junk_itself_and_several_incidents() -> None:
    document = iodef_document(
        namespace=IODEF_2,
        impact='<SystemImpact type="ext-value" ext-type="phishing"/>',
        record=junk().decode(),
        incidents=3,
    )
    reports = parse(iodef_mail(document, filename="report.iodef", ctype="application/iodef+xml"))
    assert [r.format for r in reports] == ["iodef"] * 3
    assert {r.feedback_type for r in reports} == {"fraud"}
    assert len({r.report_id for r in reports}) == 3
    assert reports[0].original.subject == "Grüße und Uhren"
    assert reports[0].feedback is not None and reports[0].feedback.version == "2.00"


def test_iodef_without_a_record_is_attributed_from_its_source_alone() -> None:
    report = one(iodef_mail(iodef_document(impact='<Impact type="dos"/>')))
    assert (report.format, report.source.ip, report.feedback_type) == ("iodef", "192.0.2.77", "other")
    assert any("without the original message" in d for d in report.defects)


BOMB = (
    '<!DOCTYPE IODEF-Document [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
)
EXTERNAL = '<!DOCTYPE IODEF-Document [<!ENTITY x SYSTEM "file:///etc/passwd">]>'


@pytest.mark.parametrize("doctype", [BOMB, EXTERNAL])
def test_iodef_entities_are_refused_not_expanded(doctype: str) -> None:
    document = iodef_document(doctype=doctype).replace(
        "Host sending", "&d; Host sending" if doctype == BOMB else "&x;"
    )
    with pytest.raises(ReportRejected) as rejected:
        parse(iodef_mail(document))
    assert rejected.value.reason.startswith("IODEF document unreadable")


def test_iodef_huge_attributes_and_documents_are_bounded() -> None:
    huge = iodef_document().replace('purpose="reporting"', 'purpose="reporting" x="' + "A" * 2_000_000 + '"')
    report = one(iodef_mail(huge))  # under the size limit: read, the attribute kept short
    assert report.feedback is not None and len(report.feedback.extra["iodef-purpose"]) <= 100
    with pytest.raises(ReportRejected) as rejected:
        parse(iodef_mail(huge), limits=ParseLimits(max_xml_bytes=1_000_000))
    assert "over 1000000 bytes" in rejected.value.reason
    with pytest.raises(ReportRejected):
        parse(iodef_mail("<IODEF-Document><Incident>"))  # malformed: one clear reason


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_iodef_never_crashes(data: st.DataObject) -> None:
    document = iodef_document(record=junk().decode())
    position = data.draw(st.integers(0, len(document) - 1))
    insert = data.draw(
        st.sampled_from(["<", ">", "&", "]]>", "<Incident>", "\x00", "<!ENTITY z 'x'>", "&amp;", '"', "é"])
    )
    cut = data.draw(st.integers(0, 20))
    mutated = document[:position] + insert + document[position + cut :]
    try:
        for report in parse(iodef_mail(mutated)):
            report.model_dump_json()
    except ReportRejected as exc:
        assert exc.reason and not exc.reason.startswith("parser error"), exc.reason


# --- 3. A whole message forwarded as the message ------------------------------------------------------


def test_a_top_level_message_rfc822_is_the_forwarded_junk() -> None:
    raw = (
        b"From: Reporter <rep@reporter.example>\r\nTo: abuse@isp.example\r\nSubject: spam\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" + junk()
    )
    report = one(raw)
    assert (report.format, report.source.ip, report.reporter.address) == (
        "forward-attachment",
        "8.8.4.4",
        "rep@reporter.example",
    )
    assert report.original.from_domain == "watches.example.com"


# --- 4. Inline forwards with the original header block ------------------------------------------------


def headers_text(headers: list[tuple[str, str]], separator: str = ": ") -> str:
    return "".join(f"{name}{separator}{value}\n" for name, value in headers)


def inline(body: str, *, flowed: bool = False) -> bytes:
    ctype = "text/plain; charset=utf-8" + ("; format=flowed" if flowed else "")
    return message(
        [
            ("From", "Bob Reporter <bob@reporter.example>"),
            ("To", "abuse@isp.example"),
            ("Subject", "Fwd: Grüße"),
            ("MIME-Version", "1.0"),
            ("Content-Type", ctype),
        ],
        body,
    )


def test_thunderbird_all_headers_forward_is_attributed_from_its_received_lines() -> None:
    # Thunderbird with View > Headers > All: "Name: <tab>value", long values soft-wrapped (format=flowed).
    table = "".join(f"{name}: \t{value}\n" for name, value in JUNK_HEADERS)
    table = table.replace("by mx.recipient.example (Postfix)", "by \nmx.recipient.example (Postfix)")
    body = f"see below\n\n-------- Forwarded Message --------\n{table}\n\n\nBuy cheap watches at http://spam.example.co.uk/x\n"
    report = one(inline(body, flowed=True))
    assert (report.format, report.source.ip, report.source.handoff_ip) == (
        "forward-inline",
        "8.8.4.4",
        "8.8.4.4",
    )
    assert report.original.from_domain == "watches.example.com"
    assert report.original.message_id == "junk-1@watches.example.com"
    assert report.original.url_domains == ["example.co.uk"]
    assert [h.from_ip for h in report.original.received] == ["10.0.0.5", "8.8.4.4", "1.2.3.4"]
    assert "1.2.3.4" in report.source.hints
    assert any("original header block" in d for d in report.defects)


def test_alpine_full_headers_quoted_forward() -> None:
    block = headers_text(JUNK_HEADERS)
    quoted = "".join(f"> {line}\n" if line else ">\n" for line in block.splitlines())
    body = f"FYI\n\n---------- Forwarded message ----------\n{quoted}>\n> Buy cheap watches\n"
    report = one(inline(body))
    assert (report.format, report.source.ip) == ("forward-inline", "8.8.4.4")


def test_a_sentence_starting_received_is_no_header_block() -> None:
    body = "Received: yes, thanks for the report.\n\nOn Mon, 1 Jun 2026 at 10:00, Spammer <offers@watches.example.com> wrote:\n> buy\n"
    report = one(inline(body))
    assert report.format == "forward-inline" and report.source.ip is None
    assert report.original.from_domain == "watches.example.com"


# --- 5. The recipient's own forwarding relays ---------------------------------------------------------

ALIAS_HEADERS = [
    ("Received", "from mx1.uni-example.edu (mx1.uni-example.edu [81.2.69.25]) by mail.reporter.example (Postfix) "
     "with ESMTPS id 9; Mon, 1 Jun 2026 10:00:03 +0000"),
    ("Received", "from relay.uni-example.edu (relay.uni-example.edu [81.2.69.30]) by mx1.uni-example.edu (Postfix) "
     "with ESMTP id 8 for <alice@uni-example.edu>; Mon, 1 Jun 2026 10:00:02 +0000"),
    ("Received", "from spammer.example (host-8-8-4-4.spam.example [8.8.4.4]) by relay.uni-example.edu "
     "(Postfix) with ESMTP id 7 for <alice@uni-example.edu>; Mon, 1 Jun 2026 10:00:01 +0000"),
    ("Received", "from forged.example ([1.2.3.4]) by spammer.example; Mon, 1 Jun 2026 09:59:00 +0000"),
    ("From", "Cheap Watches <offers@watches.example.com>"),
    ("To", "alice@uni-example.edu"),
    ("Subject", "watches"),
    ("Message-ID", "<junk-2@watches.example.com>"),
]  # fmt: skip


def test_the_recipients_forwarding_relays_are_trusted_and_the_sender_named() -> None:
    report = one(message(ALIAS_HEADERS), trap=True)
    assert report.source.ip == "8.8.4.4"
    relays = [e.value for e in report.evidence if e.method == "recipient-forwarding-relay"]
    assert relays == ["mx1.uni-example.edu", "relay.uni-example.edu"]
    assert sum("forwarding relay" in d for d in report.defects) == 2
    assert [h.trusted for h in report.original.received] == [True, True, False, False]


def test_no_forwarding_inference_for_the_senders_own_domain_nor_when_nothing_is_left_below() -> None:
    own = [
        (n, v.replace("watches.example.com", "uni-example.edu") if n == "From" else v)
        for n, v in ALIAS_HEADERS
    ]
    assert (
        one(message(own), trap=True).source.ip == "81.2.69.25"
    )  # mail from uni-example.edu to uni-example.edu
    top_only = [
        h for h in ALIAS_HEADERS if not h[1].startswith(("from relay", "from spammer", "from forged"))
    ]
    top_only.insert(
        1,
        (
            "Received",
            "from localhost (localhost [127.0.0.1]) by mx1.uni-example.edu for <alice@uni-example.edu>; Mon, 1 Jun 2026 10:00:01 +0000",
        ),
    )
    report = one(message(top_only), trap=True)
    assert report.source.ip == "81.2.69.25"  # nothing untrusted below: the relay stays the source
    assert not any(e.method == "recipient-forwarding-relay" for e in report.evidence)


# --- 6. Exchange Online tenants that forward ----------------------------------------------------------

TENANT = "0de226ae-1679-4242-ade6-4184cb2fa602"


def forwarded_by_tenant(verdict: str) -> bytes:
    return message(
        [
            ("Received", "from mx01.trap.example (mx01.trap.example [200.229.128.68]) by mx02.trap.example "
             "(Postfix) with ESMTPS id 1; Tue, 28 Feb 2023 05:59:40 +0000"),
            ("Received", "from NAM02-DM3-obe.outbound.protection.outlook.com (mail-dm3nam02lp2044.outbound."
             "protection.outlook.com [104.47.56.44]) by mx01.trap.example (Postfix) with ESMTPS id 2; "
             "Tue, 28 Feb 2023 05:59:39 +0000"),
            ("Received", "from mail-wm1-f49.google.com (209.85.128.49) by BN1NAM02FT004.mail.protection."
             "outlook.com (10.13.2.131) with Microsoft SMTP Server; Tue, 28 Feb 2023 05:59:36 +0000"),
            ("X-Forefront-Antispam-Report", verdict),
            ("X-MS-Exchange-CrossTenant-Id", TENANT),
            ("X-OriginatorOrg", "victim-tenant.example"),
            ("X-MS-Exchange-CrossTenant-AuthAs", "Anonymous"),
            ("From", "Phisher <phisher@gmail.example>"),
            ("To", "employee@victim-tenant.example"),
            ("Subject", "invoice"),
        ]
    )  # fmt: skip


def test_a_tenant_that_forwards_is_a_victim_and_the_inbound_cip_the_sender() -> None:
    trust = TrustPolicy.from_cidrs(["200.229.128.0/24"])
    inbound = "CIP:209.85.128.49;CTRY:US;LANG:en;SCL:1;SFV:NSPM;H:mail-wm1-f49.google.com;DIR:INB;"
    report = one(forwarded_by_tenant(inbound), trap=True, trust=trust)
    assert (report.source.ip, report.source.tenant_id, report.source.platform) == (
        "209.85.128.49",
        None,
        "exchange-online",
    )
    assert report.source.handoff_ip == "104.47.56.44"
    forwarder = {e.field: e.value for e in report.evidence if e.method == "exo-forwarding-tenant"}
    assert forwarder == {
        "forwarded_by.tenant_id": TENANT,
        "forwarded_by.tenant_domain": "victim-tenant.example",
    }


def test_a_tenant_that_sends_is_still_the_source() -> None:
    trust = TrustPolicy.from_cidrs(["200.229.128.0/24"])
    outbound = "CIP:255.255.255.255;CTRY:;LANG:en;SCL:1;SFV:NSPM;DIR:OUT;"
    report = one(forwarded_by_tenant(outbound), trap=True, trust=trust)
    assert report.source.tenant_id == TENANT
    inside = "CIP:40.107.1.2;SCL:1;DIR:INB;"  # entered from another tenant: not an Internet sender
    assert one(forwarded_by_tenant(inside), trap=True, trust=trust).source.tenant_id == TENANT


@requires_bulk
@pytest.mark.corpus
@pytest.mark.parametrize(
    ("sample", "sender"), [("sample-405.eml", "209.85.128.49"), ("sample-407.eml", "209.85.208.65")]
)
def test_the_real_forwarding_tenant_samples(sample: str, sender: str) -> None:
    raw = (BULK / sample).read_bytes()
    report = one(raw, trap=True, trust=TrustPolicy.from_cidrs(["200.229.128.0/24"]))
    assert (report.source.ip, report.source.tenant_id) == (sender, None)
    assert any(e.field == "forwarded_by.tenant_id" and e.value == TENANT for e in report.evidence)


def test_parse_message_keyword_arguments_reach_the_parser() -> None:
    # guards the helper the tests above use
    assert parse_message(junk(), trap=True)[0].format == "trap"
