"""Describe the reported (junk) message and assemble the normalized report around it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from parsers.attribution import StatedSource, attribute
from parsers.authresults import dkim_domain, parse_authentication_results, parse_received_spf
from parsers.context import ParseContext
from parsers.headers import Defects, HeaderIndex, decode_words, domain_of, message_id, parse_address
from parsers.limits import ParseLimits
from parsers.microsoft import verdicts
from parsers.mime import content_type, decoded, filename, leaves, text_of
from parsers.urls import extract_urls
from schemas import AbuseReport, Attachment, AuthResult, Evidence, FeedbackFields, Original, Reporter, Url

MAX_AUTH_RESULTS = 30
MAX_ATTACHMENTS = 50


@dataclass(slots=True)
class ReportedMessage:
    """The junk as far as it is known: full message, headers only, or only a few inline fields."""

    headers: HeaderIndex
    msg: Message | None = None
    headers_only: bool = False
    text: str | None = None
    """Body text when there is no MIME structure (inline forwards)."""
    overrides: dict[str, str | None] = field(default_factory=dict)
    """Values stated by the container (inline-forward labels, legacy submission subject)."""
    sha256: str | None = None
    """Hash of the reported message's bytes where they are the input itself (trap mode, saved .msg)."""


def describe(reported: ReportedMessage, limits: ParseLimits, defects: Defects) -> dict[str, Any]:
    """The fields of the reported message's `Original`, all but `received` (which attribution adds: the
    model is built once, with it, instead of built and then copied)."""
    headers = reported.headers
    sender = parse_address(reported.overrides.get("from") or headers.get("from"), defects)
    subject = reported.overrides.get("subject") or headers.get("subject")
    return_path = parse_address(headers.get("return-path"), None)
    reply_to = parse_address(headers.get("reply-to"), None)
    to = [a.address for v in headers.all("to")[:5] if (a := parse_address(v, None)) and a.address]
    dkim = _unique(d for v in headers.all("dkim-signature")[:20] if (d := dkim_domain(v)))
    auth: list[AuthResult] = []
    for value in headers.all("authentication-results")[:10]:
        auth.extend(parse_authentication_results(value))
    for value in headers.all("received-spf")[:5]:
        spf = parse_received_spf(value)
        if spf is not None:
            auth.append(spf)
    urls: dict[str, Url] = {}
    attachments: list[Attachment] = []
    if reported.msg is not None and not reported.headers_only:
        _scan_body(reported.msg, limits, defects, urls, attachments)
    if reported.text:
        extract_urls(reported.text[: limits.max_text_scan_bytes], limit=limits.max_urls, seen=urls)
    url_list = list(urls.values())
    mail_from = return_path.address if return_path else None
    return {
        "message_id": message_id(reported.overrides.get("message_id") or headers.get("message-id")),
        "subject": _clean(decode_words(subject, defects)),
        "from_address": sender.address if sender else None,
        "from_domain": sender.domain if sender else None,
        "from_name": _clean(sender.name) if sender else None,
        "reply_to": reply_to.address if reply_to else None,
        "return_path": mail_from,
        "mail_from": mail_from,
        "mail_from_domain": domain_of(mail_from),
        "to": [t for t in to if t],
        "date": _clean(reported.overrides.get("date") or headers.get("date")),
        "dkim_domains": dkim,
        "auth_results": auth[:MAX_AUTH_RESULTS],
        "urls": url_list,
        "url_domains": _unique(u.registrable_domain for u in url_list if u.registrable_domain),
        "attachments": attachments,
        "exchange": verdicts(headers),
        "headers_only": reported.headers_only,
        "sha256": reported.sha256,
    }


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    # Decoded words may smuggle line breaks (header injection); a subject is one line.
    return " ".join(value.replace("\x00", "").split())[:1000] or None


def _unique(values: object) -> list[str]:
    out: dict[str, None] = {}
    for value in values:  # type: ignore[attr-defined]
        out.setdefault(value, None)
    return list(out)


def _scan_body(
    msg: Message, limits: ParseLimits, defects: Defects, urls: dict[str, Url], attachments: list[Attachment]
) -> None:
    for part in leaves(msg, limits, defects):
        ctype = content_type(part)
        name = filename(part)
        disposition = str(part.get("content-disposition", "")).lower()
        if ctype in ("text/plain", "text/html") and name is None and "attachment" not in disposition:
            text = text_of(part, limits, defects, max_bytes=limits.max_text_scan_bytes)
            extract_urls(text, limit=limits.max_urls, seen=urls)
            continue
        if part is msg or len(attachments) >= MAX_ATTACHMENTS:
            continue
        data = decoded(part, limits, defects)
        attachments.append(
            Attachment(
                filename=name,
                content_type=ctype,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest() if data else None,
            )
        )


def make_report(
    ctx: ParseContext,
    *,
    index: int,
    format: str,
    feedback_type: str,
    reporter: Reporter,
    reported: ReportedMessage | None,
    stated: StatedSource | None = None,
    feedback: FeedbackFields | None = None,
    extra_evidence: list[Evidence] | None = None,
    extra_defects: list[str] | None = None,
    original_overrides: dict[str, object] | None = None,
) -> AbuseReport:
    defects = Defects()
    defects.extend(ctx.defects.list())
    defects.extend(extra_defects or [])
    if reported is not None:
        fields = describe(reported, ctx.limits, defects)
        attribution = attribute(
            reported.headers,
            trust=ctx.trust,
            defects=defects,
            stated=stated,
            dkim_domains=fields["dkim_domains"],
            addressed_to=(reporter.domain,),
        )
        original = Original(**fields, received=attribution.hops)
        source = attribution.source
        evidence = attribution.evidence
    else:
        original = Original()
        attribution = attribute(HeaderIndex(()), trust=ctx.trust, defects=defects, stated=stated)
        source, evidence = attribution.source, attribution.evidence
    if original_overrides:
        original = original.model_copy(update=original_overrides)
    if feedback is not None and feedback.original_mail_from and not original.mail_from:
        mail_from = parse_address(feedback.original_mail_from, None)
        if mail_from and mail_from.address:
            original = original.model_copy(
                update={"mail_from": mail_from.address, "mail_from_domain": mail_from.domain}
            )
    return AbuseReport(
        report_id=ctx.report_id(index),
        format=format,
        feedback_type=feedback_type,
        received_at=ctx.received_at,
        report_date=ctx.report_date,
        input_sha256=ctx.input_sha256,
        part=index,
        reporter=reporter,
        source=source,
        original=original,
        feedback=feedback,
        evidence=[*evidence, *(extra_evidence or [])],
        defects=defects.list(),
    )


def reporter_from(headers: HeaderIndex, defects: Defects, *, user_agent: str | None = None) -> Reporter:
    sender = parse_address(headers.get("from"), defects)
    if sender is None:
        sender = parse_address(headers.get("sender") or headers.get("return-path"), None)
    return Reporter(
        address=sender.address if sender else None,
        domain=sender.domain if sender else None,
        name=_clean(sender.name) if sender else None,
        user_agent=user_agent,
    )


def trap_reporter(headers: HeaderIndex) -> Reporter:
    """The trap or redirect mailbox the junk was delivered to."""
    for name in ("delivered-to", "x-original-to", "envelope-to", "to"):
        value = headers.get(name)
        addr = parse_address(value, None) if value else None
        if addr and addr.address:
            return Reporter(address=addr.address, domain=addr.domain)
    return Reporter()
