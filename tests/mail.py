"""Builders for synthetic test mails (our own samples for what the corpus lacks)."""

from __future__ import annotations

from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.policy import compat32


def message(
    headers: list[tuple[str, str]], body: str = "Buy cheap watches at http://spam.example.co.uk/x\n"
) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (head + "\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


JUNK_HEADERS = [
    (
        "Received",
        "from mx.recipient.example (mx.recipient.example [10.0.0.5]) by mbox.recipient.example "
        "(Postfix) with ESMTP id 1; Mon, 1 Jun 2026 10:00:02 +0000",
    ),
    (
        "Received",
        "from spammer.example (host-8-8-4-4.spam.example [8.8.4.4]) by mx.recipient.example "
        "(Postfix) with ESMTP id 2; Mon, 1 Jun 2026 10:00:01 +0000",
    ),
    ("Received", "from forged.example ([1.2.3.4]) by spammer.example; Mon, 1 Jun 2026 09:59:00 +0000"),
    ("From", "Cheap Watches <offers@watches.example.com>"),
    ("To", "victim@recipient.example"),
    ("Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe_und_Uhren?="),
    ("Message-ID", "<junk-1@watches.example.com>"),
    ("Date", "Mon, 1 Jun 2026 09:59:00 +0000"),
    ("Return-Path", "<bounce@mailer.example.net>"),
    ("DKIM-Signature", "v=1; a=rsa-sha256; d=watches.example.com; s=s1; h=from; bh=x; b=y"),
]


def junk(extra: list[tuple[str, str]] | None = None, headers: list[tuple[str, str]] | None = None) -> bytes:
    return message([*(extra or []), *(headers if headers is not None else JUNK_HEADERS)])


def arf(
    feedback_type: str,
    original: bytes,
    *,
    fields: list[tuple[str, str]] | None = None,
    headers_only: bool = False,
    wrapper: str = "report",
) -> bytes:
    outer = (
        MIMEMultipart(wrapper, report_type="feedback-report")
        if wrapper == "report"
        else MIMEMultipart(wrapper)
    )
    outer["From"] = "FBL <fbl@isp.example>"
    outer["To"] = "abuse@sender.example"
    outer["Subject"] = "Abuse report"
    outer.attach(MIMEText("This is an email abuse report.\n"))
    report = MIMEBase("message", "feedback-report")
    lines = [
        ("Feedback-Type", feedback_type),
        ("User-Agent", "TestFBL/1.0"),
        ("Version", "1"),
        *(fields or []),
    ]
    report.set_payload("".join(f"{k}: {v}\r\n" for k, v in lines))
    outer.attach(report)
    if headers_only:
        part = MIMEText(original.split(b"\r\n\r\n", 1)[0].decode() + "\r\n", "rfc822-headers")
        outer.attach(part)
    else:
        outer.attach(MIMEMessage(BytesParser(policy=compat32).parsebytes(original)))
    return outer.as_bytes()


def forward(
    attachments: list[bytes | tuple[str, bytes]],
    *,
    subject: str = "Fwd: spam",
    sender: str = "Alice Reporter <alice@reporter.example>",
    to: str = "abuse@isp.example",
    note: str = "Please look at this.\n",
) -> bytes:
    outer = MIMEMultipart("mixed")
    outer["From"] = sender
    outer["To"] = to
    outer["Subject"] = subject
    outer["Message-ID"] = "<fwd-1@reporter.example>"
    outer.attach(MIMEText(note))
    for item in attachments:
        if isinstance(item, tuple):
            name, data = item
            part = MIMEApplication(
                data, _subtype="vnd.ms-outlook" if name.endswith(".msg") else "octet-stream"
            )
            part.add_header("Content-Disposition", "attachment", filename=name)
            outer.attach(part)
        else:
            outer.attach(MIMEMessage(BytesParser(policy=compat32).parsebytes(item)))
    return outer.as_bytes()


def inline_forward(body: str, *, subject: str = "Fwd: look at this") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Bob Reporter <bob@reporter.example>"
    msg["To"] = "junk@isp.example"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg.as_bytes()


def many_reports(count: int) -> list[bytes]:
    """`count` distinct ARF reports (one report each) from 256 reporters about 1,000 source IPs."""
    template = arf(
        "abuse",
        junk(headers=[(n, v.replace("8.8.4.4", "45.33.0.1")) for n, v in JUNK_HEADERS]),
        fields=[("Source-IP", "45.33.0.1"), ("Original-Mail-From", "bounce@mailer.example.net")],
    )
    template = template.replace(b"junk-1@", b"junk-NNNNNNNN@").replace(
        b"fbl@isp.example", b"fbl@isp-RRR.example"
    )
    out = []
    for i in range(count):
        ip = f"45.33.{(i // 250) % 4}.{i % 250 + 1}".encode()
        out.append(
            template.replace(b"45.33.0.1", ip)
            .replace(b"NNNNNNNN", f"{i:08d}".encode())
            .replace(b"RRR", f"{i % 256:03d}".encode())
        )
    return out


IODEF_1 = "urn:ietf:params:xml:ns:iodef-1.0"
IODEF_2 = "urn:ietf:params:xml:ns:iodef-2.0"


def iodef_document(
    *,
    namespace: str = IODEF_1,
    source: str = "192.0.2.77",
    impact: str = '<Impact type="ext-value" ext-type="spam" completion="succeeded"/>',
    record: str | None = None,
    incidents: int = 1,
    doctype: str = "",
) -> str:
    """An IODEF document shaped as RFC 5070 section 7 (and RFC 7970 with the 2.0 namespace) shows it."""
    version = "2.00" if namespace == IODEF_2 else "1.00"
    record_xml = (
        '<Record><RecordData><RecordItem dtype="string"><![CDATA['
        + record
        + "]]></RecordItem></RecordData></Record>"
        if record is not None
        else ""
    )
    incident = f"""
  <Incident purpose="reporting">
    <IncidentID name="csirt.example.com">{{n}}</IncidentID>
    <ReportTime>2026-06-01T10:05:00+00:00</ReportTime>
    <Description>Host sending unsolicited bulk e-mail</Description>
    <Assessment>{impact}</Assessment>
    <Contact role="creator" type="organization"><ContactName>CSIRT Example</ContactName>
      <Email>cert@csirt.example.com</Email></Contact>
    <EventData>
      <DetectTime>2026-06-01T09:59:00+00:00</DetectTime>
      <Flow>
        <System category="source"><Node><Address category="ipv4-addr">{source}</Address></Node></System>
        <System category="target"><Node><Address category="ipv4-addr">198.51.100.9</Address></Node></System>
      </Flow>
      {record_xml}
    </EventData>
  </Incident>"""
    body = "".join(incident.replace("{n}", str(189493 + i)) for i in range(incidents))
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}'
        f'<IODEF-Document version="{version}" lang="en" xmlns="{namespace}">{body}\n</IODEF-Document>\n'
    )


def iodef_mail(document: str, *, filename: str = "incident.xml", ctype: str = "application/xml") -> bytes:
    """What CERTs and abuse exchanges send: a text part and the IODEF XML as an attachment."""
    outer = MIMEMultipart("mixed")
    outer["From"] = "CSIRT Example <cert@csirt.example.com>"
    outer["To"] = "abuse@isp.example"
    outer["Subject"] = "[CSIRT Example] Incident 189493: spam from your network"
    outer.attach(MIMEText("Dear abuse team,\n\nsee the attached IODEF report.\n"))
    sub = ctype.partition("/")[2]
    part = MIMEApplication(document.encode("utf-8"), _subtype=sub)
    part.replace_header("Content-Type", f"{ctype}; charset=utf-8")
    part.add_header("Content-Disposition", "attachment", filename=filename)
    outer.attach(part)
    return outer.as_bytes()


XSS = '"><script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def hostile_junk(n: int = 0) -> bytes:
    """Junk whose every shown string tries to break out of the page: subjects, names, URLs, attachment
    names, an Exchange tenant domain, right-to-left overrides, a 10,000-character line."""
    outer = MIMEMultipart("mixed")
    outer["Received"] = (
        "from mx.recipient.example (mx.recipient.example [10.0.0.5]) by mbox.recipient.example "
        f"(Postfix) with ESMTP id {n}; Mon, 1 Jun 2026 10:00:02 +0000"
    )
    outer["Received"] = (
        f"from evil{n}.example (host-8-8-4-4.spam.example [8.8.4.{n % 200 + 1}]) by mx.recipient.example "
        "(Postfix) with ESMTP id 2; Mon, 1 Jun 2026 10:00:01 +0000"
    )
    outer["From"] = f'"{XSS} \u202eevil" <offers{n}@xss-{n}.example.com>'
    outer["To"] = "victim@recipient.example"
    outer["Subject"] = f"{XSS} \u202ereversed\u202c {'A' * 10_000}"
    outer["Message-ID"] = f"<{n}.{XSS.replace(' ', '')}@xss.example.com>"
    outer["X-OriginatorOrg"] = f"{XSS}.onmicrosoft.com"
    outer["Date"] = "Mon, 1 Jun 2026 09:59:00 +0000"
    body = (
        f'click http://xss-{n}.example.com/"><script>window.pwned=3</script> and '
        "javascript:window.pwned=4 and http://xss.example.com/\u202egpj.exe\n" + "B" * 10_000 + "\n"
    )
    outer.attach(MIMEText(body))
    part = MIMEApplication(b"MZ payload", _subtype="octet-stream")
    part.add_header("Content-Disposition", "attachment", filename=f"{XSS}\u202efdp.exe")
    outer.attach(part)
    return outer.as_bytes()
