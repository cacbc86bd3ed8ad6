"""IODEF-wrapped incident reports: CERTs and abuse exchanges send a mail with a text part and an IODEF
XML attachment (RFC 5070 IODEF 1.0, RFC 7970 IODEF 2.0; RFC 5901's phishing extensions).

Per `Incident`: the offending source from `EventData/Flow/System[@category="source"]/Node/Address`
(an IP; a name from `NodeName`/`DomainData/Name`), the category from `Assessment/Impact` (or
`SystemImpact`), `Method/Reference/ReferenceName`, RFC 5901's `FraudType` and the descriptions, and the
original when a `RecordItem` (or RFC 5901 `EmailMessage`) carries it as text: an ARF report (its
reported message and Source-IP) or the junk itself.

The XML is attacker-controlled: it is parsed by defusedxml (no entity expansion, no external entities or
DTDs fetched), bounded in size (`ParseLimits.max_xml_bytes`) and in the elements walked.
"""

from __future__ import annotations

from email.message import Message
from typing import TYPE_CHECKING

from abusepipe.errors import ReportRejected
from parsers import arf
from parsers.attribution import StatedSource
from parsers.context import ParseContext
from parsers.headers import HeaderIndex
from parsers.mime import content_type, filename, parse_limited, text_of
from parsers.original import ReportedMessage, make_report, reporter_from
from parsers.received import parse_ip
from parsers.vocabulary import feedback_type_for
from schemas import AbuseReport, FeedbackFields, Reporter

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

FORMAT = "iodef"
XML_TYPES = ("application/xml", "text/xml", "application/iodef+xml", "application/x-iodef+xml")
MAX_ELEMENTS = 20_000
"""Elements looked at per document; the rest are ignored (with a defect)."""
_ADDRESS_IP = ("ipv4-addr", "ipv6-addr", "ipv4-net", "ipv6-net", "ipv4-net-mask", "ipv6-net-mask")
_CATEGORY_MEANINGS = ("category", "classification", "type", "class", "taxonomy")


def _iodef_part(ctx: ParseContext) -> Message | None:
    for part in ctx.parts():
        ctype = content_type(part)
        name = (filename(part) or "").lower()
        if ctype in XML_TYPES or name.endswith((".xml", ".iodef")):
            head = text_of(part, ctx.limits, ctx.defects, max_bytes=64 * 1024)
            if "IODEF-Document" in head:
                return part
    return None


def detect(ctx: ParseContext) -> bool:
    return _iodef_part(ctx) is not None


def local(tag: object) -> str:
    """An element's name without its namespace (`{urn:ietf:params:xml:ns:iodef-2.0}Incident`)."""
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if local(child.tag) == name]


def _descendants(element: Element, name: str, budget: list[int]) -> list[Element]:
    out = []
    for node in element.iter():
        budget[0] -= 1
        if budget[0] < 0:
            break
        if local(node.tag) == name:
            out.append(node)
    return out


def _text(element: Element | None) -> str:
    if element is None:
        return ""
    return " ".join("".join(element.itertext()).split())[:1000]


def parse(ctx: ParseContext) -> list[AbuseReport]:
    part = _iodef_part(ctx)
    if part is None:
        return []
    from defusedxml import DefusedXmlException  # noqa: PLC0415 - only IODEF mail needs an XML parser
    from defusedxml.ElementTree import ParseError, fromstring  # noqa: PLC0415

    limit = ctx.limits.max_xml_bytes
    text = text_of(part, ctx.limits, ctx.defects, max_bytes=limit + 1)
    if len(text) > limit:
        raise ReportRejected(f"IODEF document over {limit} bytes: not read")
    try:
        root = fromstring(text.encode("utf-8"), forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise ReportRejected(f"IODEF document unreadable: {' '.join(str(exc).split())[:200]}") from exc
    budget = [MAX_ELEMENTS]
    incidents = _descendants(root, "Incident", budget)
    if budget[0] < 0:
        ctx.defects.add(f"IODEF document of more than {MAX_ELEMENTS} elements: the rest were ignored")
    if not incidents:
        raise ReportRejected("IODEF document without an Incident")
    version = root.get("version")
    reporter = reporter_from(ctx.headers, ctx.defects, user_agent=f"IODEF {version}" if version else "IODEF")
    reports: list[AbuseReport] = []
    for incident in incidents:
        if len(reports) >= ctx.limits.max_reports:
            ctx.defects.add(f"more than {ctx.limits.max_reports} IODEF incidents: the rest were skipped")
            break
        reports.append(_report(ctx, incident, len(reports), reporter, version))
    return reports


def _report(
    ctx: ParseContext, incident: Element, index: int, reporter: Reporter, version: str | None
) -> AbuseReport:
    budget = [MAX_ELEMENTS]
    defects: list[str] = []
    category = _category(incident, budget)
    source, source_type = _source(incident, budget)
    incident_id = _text(next(iter(_children(incident, "IncidentID")), None))
    extra = {"iodef-incident-id": incident_id} if incident_id else {}
    if incident.get("purpose"):
        extra["iodef-purpose"] = incident.get("purpose", "")[:100]
    reported, embedded_source = _embedded(ctx, incident, budget, defects)
    stated = None
    ip = parse_ip(source) if source and source_type == "ip-address" else None
    if ip is not None:
        detail = f"IODEF Incident {incident_id or index + 1}: source {source}"
        stated = StatedSource(ip, "iodef-source", detail)
    elif embedded_source is not None:
        stated = embedded_source
    if reported is None:
        defects.append("IODEF incident without the original message: attributed from the IODEF source only")
    feedback = FeedbackFields(
        version=version,
        user_agent=reporter.user_agent,
        source_ip=str(ip) if ip else None,
        category=category or None,
        report_type="iodef",
        source=source,
        source_type=source_type,
        arrival_date=_text(_first(incident, ("DetectTime", "StartTime", "ReportTime"), budget)) or None,
        extra=extra,
    )
    return make_report(
        ctx,
        index=index,
        format=FORMAT,
        feedback_type=feedback_type_for(category, ""),
        reporter=reporter,
        reported=reported,
        stated=stated,
        feedback=feedback,
        extra_defects=defects,
    )


def _first(element: Element, names: tuple[str, ...], budget: list[int]) -> Element | None:
    for name in names:
        found = _descendants(element, name, budget)
        if found:
            return found[0]
    return None


def _category(incident: Element, budget: list[int]) -> str:
    """The incident's kind in the reporter's words: impact types, RFC 5901 fraud type, references."""
    words: list[str] = []
    for node in incident.iter():
        budget[0] -= 1
        if budget[0] < 0:
            break
        name = local(node.tag)
        if name in ("Impact", "SystemImpact", "BusinessImpact"):
            kind = node.get("type", "")
            words.append(node.get("ext-type", "") if kind == "ext-value" else kind)
            words.append(_text(node))
        elif name in ("FraudType", "ReferenceName", "Classification") or (
            name == "AdditionalData" and (node.get("meaning") or "").lower() in _CATEGORY_MEANINGS
        ):
            words.append(_text(node))
    if not any(word.strip() for word in words):
        words = [_text(node) for node in _children(incident, "Description")]
    return " ".join(word for word in words if word and word != "unknown")[:200]


def _source(incident: Element, budget: list[int]) -> tuple[str | None, str | None]:
    """The first source system's address (an IP: source type `ip-address`) or name (`domain`)."""
    for system in _descendants(incident, "System", budget):
        if (system.get("category") or "").lower() != "source":
            continue
        for address in _descendants(system, "Address", budget):
            value = _text(address)
            kind = (address.get("category") or "ipv4-addr").lower()
            if kind in _ADDRESS_IP and value:
                value = value.split("/", 1)[0] if kind.endswith(("-net", "-net-mask")) else value
                if parse_ip(value) is not None:
                    return value, "ip-address"
        for name in ("NodeName", "Name", "DomainName"):
            for node in _descendants(system, name, budget):
                value = _text(node)
                if value:
                    return value[:255], "domain"
    return None, None


def _embedded(
    ctx: ParseContext, incident: Element, budget: list[int], defects: list[str]
) -> tuple[ReportedMessage | None, StatedSource | None]:
    """The original carried as text (CDATA) in a RecordItem or an RFC 5901 EmailMessage."""
    for name in ("RecordItem", "EmailMessage", "EmailRecord"):
        for node in _descendants(incident, name, budget):
            text = "".join(node.itertext()).strip()
            if ":" not in text[:200]:
                continue
            data = text[: ctx.limits.max_message_bytes].encode("utf-8", "surrogateescape")
            msg = parse_limited(data, ctx.limits)
            headers = HeaderIndex.of(msg, ctx.defects)
            if not any(key in headers for key in ("received", "from", "message-id", "content-type")):
                continue
            inner = ParseContext(
                raw=data,
                msg=msg,
                headers=headers,
                limits=ctx.limits,
                trust=ctx.trust,
                received_at=ctx.received_at,
                trap=False,
                defects=ctx.defects,
                input_sha256=ctx.input_sha256,
            )
            if arf.detect(inner):
                defects.append(f"IODEF {name} carries an ARF report: its original message is reported")
                return arf.embedded_original(inner, defects)
            defects.append(f"IODEF {name} carries the original message")
            return ReportedMessage(headers=headers, msg=msg), None
    return None, None
