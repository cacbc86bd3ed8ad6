"""The mails onward reporting sends: an ARF report (RFC 5965) per junk message, a digest with a CSV when
there are many, and Microsoft's format for junk sent through Exchange Online (the original attached as
`.eml`, nothing else). The reporter's addresses are redacted from everything sent (RFC 6590): the local
part becomes `redacted`, the domain stays, so the receiver still sees which network was hit."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid

from abusepipe import __version__
from sinks.outbox import new_message

MAX_EVIDENCE = 2 << 20
"""Bytes of the original attached at most (a larger one is cut, and the report says so)."""
_ADDRESS = re.compile(rb"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One junk report as onward reporting needs it."""

    report_id: str
    feedback_type: str
    source_ip: str | None
    seen_at: datetime
    reporter: str
    original: bytes = b""
    """The junk message as the reporter received it (the innermost attached message, else the input);
    read only for the mails that attach it."""
    input_sha256: str = ""
    """The stored input it came from."""
    mail_from: str | None = None
    from_domain: str | None = None
    subject: str | None = None
    message_id: str | None = None
    via_microsoft: bool = False
    """Sent through Exchange Online: Microsoft is told, not the owner of its outbound IP."""


def junk_of(raw: bytes) -> bytes:
    """The junk inside a stored input: its innermost attached message (an ARF report's third part, a
    forward's attachment), else the input itself (a trap hit, an inline forward)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    found: Message | None = None
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found = payload[0]
    if found is None:
        return raw
    return found.as_bytes()


def redact(data: bytes, addresses: Iterable[str]) -> bytes:
    """Every address of the reporter (and of the mailbox the junk reached) as `redacted@domain`."""
    for address in {a.lower() for a in addresses if a and "@" in a}:
        domain = address.rpartition("@")[2]
        data = re.sub(re.escape(address.encode()), f"redacted@{domain}".encode(), data, flags=re.IGNORECASE)
    return data


def recipients(original: bytes) -> list[str]:
    """The addresses the junk was delivered to, from its header block (To, Cc, Delivered-To,
    X-Original-To, Envelope-To, Received `for <...>`)."""
    head = original.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    found = []
    for line in re.split(rb"\r?\n(?![ \t])", head):
        name = line.split(b":", 1)[0].strip().lower()
        if name in {b"to", b"cc", b"delivered-to", b"x-original-to", b"envelope-to"}:
            found += [m.decode("ascii", "replace") for m in _ADDRESS.findall(line)]
        elif name == b"received":
            found += [
                m.decode("ascii", "replace") for m in re.findall(rb"for\s+<?([^\s<>;]+@[^\s<>;]+)>?", line)
            ]
    return found


def arf(evidence: Evidence, *, sender: str, recipient: str, operator: str, now: datetime) -> EmailMessage:
    """RFC 5965: a human-readable part, the machine-readable report, the original (redacted)."""
    hidden = [evidence.reporter, *recipients(evidence.original)]
    original = redact(evidence.original[:MAX_EVIDENCE], hidden)
    where = evidence.source_ip or "an unknown source"
    message = new_message(sender, recipient, f"Abuse report: {evidence.feedback_type} from {where}", now)
    cut = len(evidence.original) > MAX_EVIDENCE
    message.set_content(
        f"This is an abuse report about a message from {where} that a recipient at {operator} reported "
        f"as {evidence.feedback_type} on {evidence.seen_at:%Y-%m-%d %H:%M} UTC.\n"
        "The recipient's address is redacted (RFC 6590); the message is attached"
        + (" (cut to its first 2 MiB)" if cut else "")
        + ".\n",
        cte="7bit" if operator.isascii() else "8bit",
    )
    fields = [
        (
            "Feedback-Type",
            evidence.feedback_type if evidence.feedback_type != "auth-failure" else "auth-failure",
        ),
        ("User-Agent", f"abusepipe/{__version__}"),
        ("Version", "1"),
        ("Arrival-Date", format_datetime(evidence.seen_at)),
    ]
    if evidence.source_ip:
        fields.append(("Source-IP", evidence.source_ip))
    if evidence.mail_from:
        fields.append(("Original-Mail-From", f"<{redact(evidence.mail_from.encode(), hidden).decode()}>"))
    if evidence.from_domain:
        fields.append(("Reported-Domain", evidence.from_domain))
    fields.append(("Original-Rcpt-To", "<redacted>"))
    report = "".join(f"{name}: {value}\r\n" for name, value in fields)
    message.make_mixed()
    feedback = EmailMessage()
    feedback["Content-Type"] = "message/feedback-report"
    feedback.set_payload(report)
    message.attach(feedback)
    attached = EmailMessage()
    attached["Content-Type"] = "message/rfc822"
    attached.set_payload([email.message_from_bytes(original, policy=email.policy.compat32)])
    message.attach(attached)
    message.replace_header("Content-Type", 'multipart/report; report-type="feedback-report"')
    message.set_boundary(make_msgid().strip("<>").replace("@", ".")[:60])
    return message


def digest(
    rows: Sequence[Evidence], *, sender: str, recipient: str, operator: str, now: datetime
) -> EmailMessage:
    """Many reports at once: a summary and a CSV of them (no originals)."""
    sources = sorted({e.source_ip for e in rows if e.source_ip})
    message = new_message(
        sender, recipient, f"Abuse reports: {len(rows)} messages from {len(sources)} of your addresses", now
    )
    message.set_content(
        f"Recipients at {operator} reported {len(rows)} messages from {len(sources)} addresses of your "
        "network since our last report. They are listed in the attached CSV; the originals are kept and "
        "can be sent on request.\n"
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        ["report_id", "seen_at", "source_ip", "feedback_type", "from_domain", "subject", "message_id"]
    )
    for e in rows:
        writer.writerow(
            [e.report_id, e.seen_at.isoformat(), e.source_ip or "", e.feedback_type, e.from_domain or "",
             (e.subject or "")[:200], e.message_id or ""]
        )  # fmt: skip
    message.add_attachment(
        out.getvalue().encode(), maintype="text", subtype="csv", filename="abuse-reports.csv"
    )
    return message


def microsoft(evidence: Evidence, *, sender: str, recipient: str, now: datetime) -> EmailMessage:
    """What Microsoft asks of third parties reporting junk from Office 365: the original as an `.eml`
    attachment and nothing else."""
    hidden = [evidence.reporter, *recipients(evidence.original)]
    original = redact(evidence.original[:MAX_EVIDENCE], hidden)
    message = new_message(sender, recipient, "Junk from Exchange Online", now)
    junk = email.message_from_bytes(original, policy=email.policy.compat32)  # its header lines as they were
    message.add_attachment(junk, filename=f"{evidence.report_id[:16]}.eml")
    if "MIME-Version" not in message:
        message["MIME-Version"] = "1.0"
    return message
