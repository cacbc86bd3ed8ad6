"""The normalized abuse report: the model that crosses every stage boundary.

Field names marked *contract* in docs are checked by acceptance tests: never rename them. Adding optional
fields is a compatible change; anything else bumps `SCHEMA_VERSION`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

# Known values; producers may emit more (the schema keeps them open strings on purpose).
FORMATS = (
    "arf",
    "jmrp",
    "xarf",
    "spamcop",
    "ms-submission",
    "forward-attachment",
    "forward-inline",
    "trap",
    "dmarc-text",
    "unsubscribe",
    "iodef",
)
FEEDBACK_TYPES = ("abuse", "fraud", "virus", "other", "not-spam", "auth-failure", "opt-out")


def _absent(value: object) -> bool:
    return value is None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reporter(_Model):
    """Who reported: the ARF/FBL sender, the person who forwarded, or the trap mailbox."""

    address: str | None = None
    domain: str | None = None
    name: str | None = None
    user_agent: str | None = Field(None, description="ARF/X-ARF User-Agent of the reporting software")


class Evidence(_Model):
    """How one attributed value was obtained, so an analyst can check it."""

    field: str = Field(description="dotted path of the attributed field, e.g. source.ip")
    value: str
    method: str = Field(description="rule that produced it, e.g. arf-source-ip, received-walk")
    detail: str | None = Field(None, description="the header or text it was read from")


class ReceivedHop(_Model):
    """One parsed `Received` line of the reported message, newest first."""

    from_host: str | None = None
    from_ip: str | None = None
    by_host: str | None = None
    protocol: str | None = None
    trusted: bool = False
    trust_reason: str | None = None


class Source(_Model):
    """The offending source an abuse desk should act on."""

    ip: str | None = Field(None, description="contract: the most specific known origin IP")
    handoff_ip: str | None = Field(
        None, description="contract: the IP that handed the message into the recipient's network"
    )
    platform: str | None = Field(None, description="contract: exchange-online when handed off by EXO")
    tenant_id: str | None = Field(None, description="contract: sending Microsoft 365 tenant GUID")
    tenant_domain: str | None = Field(None, description="tenant initial domain (*.onmicrosoft.com)")
    helo: str | None = None
    rdns: str | None = Field(None, description="reverse DNS name as recorded by the receiving MTA")
    hints: list[str] = Field(default_factory=list, description="IPs below the boundary: attacker-controlled")
    # Offline enrichment (ABUSEPIPE_ASN_DB, ABUSEPIPE_COUNTRY_DB). Left out of the JSON when unknown, so
    # that documents without them are exactly what schema version 1 always wrote.
    asn: int | None = Field(None, exclude_if=_absent, description="autonomous system number of `ip`")
    as_org: str | None = Field(None, exclude_if=_absent, description="that autonomous system's name")
    country: str | None = Field(None, exclude_if=_absent, description="ISO 3166-1 alpha-2 country of `ip`")


class AuthResult(_Model):
    method: str = Field(description="spf, dkim, dmarc, arc, compauth, iprev, ...")
    result: str
    domain: str | None = None
    reason: str | None = None
    authserv_id: str | None = None


class Url(_Model):
    url: str
    host: str | None = None
    registrable_domain: str | None = None


class Attachment(_Model):
    filename: str | None = None
    content_type: str
    size: int
    sha256: str | None = Field(None, description="hash of the decoded content; None when over the limit")


class ExchangeVerdict(_Model):
    """One X-Forefront-Antispam-Report(-Untrusted) header, decoded."""

    header: str
    direction: str | None = Field(None, description="DIR: INB (receiving side) or OUT (sending side)")
    cip: str | None = None
    country: str | None = None
    scl: int | None = None
    sfv: str | None = None
    category: str | None = None
    ptr: str | None = None
    helo: str | None = None


class Original(_Model):
    """The reported (junk) message."""

    message_id: str | None = Field(None, description="contract: Message-ID without angle brackets")
    subject: str | None = Field(None, description="contract: decoded subject")
    from_address: str | None = None
    from_domain: str | None = Field(None, description="contract: lower-case domain of From")
    from_name: str | None = None
    reply_to: str | None = None
    return_path: str | None = None
    mail_from: str | None = Field(None, description="envelope sender (ARF Original-Mail-From or Return-Path)")
    mail_from_domain: str | None = None
    to: list[str] = Field(default_factory=list)
    date: str | None = None
    dkim_domains: list[str] = Field(default_factory=list)
    auth_results: list[AuthResult] = Field(default_factory=list)
    urls: list[Url] = Field(default_factory=list)
    url_domains: list[str] = Field(default_factory=list, description="registrable domains of the URLs")
    attachments: list[Attachment] = Field(default_factory=list)
    exchange: list[ExchangeVerdict] = Field(default_factory=list)
    received: list[ReceivedHop] = Field(default_factory=list)
    headers_only: bool = Field(False, description="only the headers of the original were available")
    sha256: str | None = Field(None, description="hash of the original message bytes when available")


class FeedbackFields(_Model):
    """The machine-readable part of an ARF (RFC 5965/6591) or X-ARF report."""

    version: str | None = None
    user_agent: str | None = None
    arrival_date: str | None = None
    reporting_mta: str | None = None
    source_ip: str | None = None
    incidents: int | None = None
    original_mail_from: str | None = None
    original_rcpt_to: list[str] = Field(default_factory=list)
    reported_domain: list[str] = Field(default_factory=list)
    reported_uri: list[str] = Field(default_factory=list)
    auth_failure: str | None = None
    delivery_result: str | None = None
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_identity: str | None = None
    spf_dns: str | None = None
    identity_alignment: str | None = None
    category: str | None = Field(None, description="X-ARF Category")
    report_type: str | None = Field(None, description="X-ARF Report-Type")
    source_type: str | None = Field(None, description="X-ARF Source-Type")
    source: str | None = Field(None, description="X-ARF Source (an IP or a URL)")
    extra: dict[str, str] = Field(default_factory=dict, description="fields not mapped above")


class AbuseReport(_Model):
    """One normalized abuse report. `abusepipe parse` prints one per line."""

    schema_version: Literal[1] = 1
    report_id: str = Field(description="contract: deterministic from the input bytes (dedup key)")
    format: str = Field(description="contract: how it arrived (see FORMATS)")
    feedback_type: str = Field(description="contract: abuse, fraud, virus, other, not-spam, ...")
    received_at: datetime | None = Field(None, description="when abusepipe received the input")
    report_date: datetime | None = Field(
        None, description="when the report was sent: its Date header, or for trap mail the trap MTA's stamp"
    )
    input_sha256: str = Field(description="hash of the whole input message")
    part: int = Field(0, description="index of this report among the input's reports")
    reporter: Reporter = Field(default_factory=Reporter)
    source: Source = Field(default_factory=Source)
    original: Original = Field(default_factory=Original)
    feedback: FeedbackFields | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    defects: list[str] = Field(default_factory=list)
