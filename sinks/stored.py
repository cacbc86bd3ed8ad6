"""What an intake produces for each input message, before any database: its reports flattened into the
rows the store writes (computed where the message was parsed), the compressed input, and the counts a
batch adds up to. No SQL here: the MTA pipe into Kafka and the parser processes never load SQLAlchemy."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import zstandard

from schemas import AbuseReport
from sinks.offenders import is_junk, offender_keys, reporter_key

COMPRESSION_LEVEL = 3  # evidence is written far more often than read: a fast level
MAX_URLS = 200  # evidence is written far more often than read: favour speed
EARLIEST_REPORT_DATE = datetime(2000, 1, 1, tzinfo=UTC)
NO_REPORT = "no report"
"""The reason of a dead letter whose rejection gave none."""


@dataclass(frozen=True, slots=True)
class PreparedReport:
    """What the store writes for one report, computed where the report was parsed.

    Flat values pickle an order of magnitude faster than the pydantic model between processes, and the
    JSON document is serialised once, by the parser process."""

    report_id: str
    input_sha256: str
    part: int
    schema_version: int
    format: str
    feedback_type: str
    junk: bool
    seen_at: datetime
    received_at: datetime
    reporter: str
    source_ip: str | None
    source_country: str | None
    handoff_ip: str | None
    platform: str | None
    tenant_id: str | None
    from_domain: str | None
    mail_from_domain: str | None
    message_id: str | None
    subject: str | None
    document: str
    keys: tuple[tuple[str, str], ...]
    urls: tuple[tuple[str, str | None, str | None], ...]

    @classmethod
    def of(cls, report: AbuseReport, received_at: datetime, *, document: str | None = None) -> PreparedReport:
        """`document`: the report's JSON when the caller already has it (read from Kafka)."""
        original, source = report.original, report.source
        return cls(
            report_id=report.report_id,
            input_sha256=report.input_sha256,
            part=report.part,
            schema_version=report.schema_version,
            format=report.format[:40],
            feedback_type=report.feedback_type[:40],
            junk=is_junk(report),
            seen_at=seen_at(report, received_at),
            received_at=report.received_at or received_at,
            reporter=reporter_key(report),
            source_ip=source.ip,
            source_country=source.country,
            handoff_ip=source.handoff_ip,
            platform=source.platform,
            tenant_id=source.tenant_id,
            from_domain=original.from_domain[:320] if original.from_domain else None,
            mail_from_domain=original.mail_from_domain[:320] if original.mail_from_domain else None,
            message_id=original.message_id,
            subject=original.subject,
            document=document if document is not None else report.model_dump_json(),
            keys=tuple(offender_keys(report)),
            urls=tuple((u.url, u.host, u.registrable_domain) for u in original.urls[:MAX_URLS]),
        )


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One input message as ingested: its reports, or why it has none (then it is dead-lettered)."""

    raw: bytes
    source: str
    received_at: datetime
    reports: Sequence[AbuseReport] = ()
    rejection: str | None = None
    size: int = -1
    """Bytes read for it (more than `raw` when it was over the size limit); -1: `len(raw)`."""
    compressed: bytes = b""
    """`raw` compressed, when a parser process already did it."""
    prepared: tuple[PreparedReport, ...] = ()
    """The rows to write, derived from `reports` (which are not sent between processes)."""
    sha256: str = ""
    """What the input is stored under: its reports' `input_sha256`, else the hash of `raw`. Computed
    where the message is parsed, once."""

    def __post_init__(self) -> None:
        if self.size < 0:
            object.__setattr__(self, "size", len(self.raw))
        if not self.compressed:
            object.__setattr__(self, "compressed", compress(self.raw))
        if self.reports and not self.prepared:
            prepared = tuple(PreparedReport.of(r, self.received_at) for r in self.reports)
            object.__setattr__(self, "prepared", prepared)
        if not self.sha256:
            sha = self.prepared[0].input_sha256 if self.prepared else hashlib.sha256(self.raw).hexdigest()
            object.__setattr__(self, "sha256", sha)

    @property
    def reason(self) -> str:
        """Why it is a dead letter."""
        return self.rejection or NO_REPORT

    def __reduce__(self) -> tuple[Any, ...]:
        # Only what the writer needs crosses a process boundary: not the pydantic reports.
        fields = (
            self.raw,
            self.source,
            self.received_at,
            (),
            self.rejection,
            self.size,
            self.compressed,
            self.prepared,
            self.sha256,
        )
        return (StoredMessage, fields)


@dataclass(slots=True)
class BatchResult:
    messages: int = 0
    reports: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    touched: set[tuple[str, str]] = field(default_factory=set)
    """The offenders (kind, key) that new junk counted against: what the blocklist re-evaluates."""

    def add(self, other: BatchResult) -> None:
        """Count `other` in: running totals of a whole ingest or consumer run are BatchResults too."""
        self.messages += other.messages
        self.reports += other.reports
        self.duplicates += other.duplicates
        self.dead_lettered += other.dead_lettered


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_COMPRESSOR = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL)
_DECOMPRESSOR = zstandard.ZstdDecompressor()


def compress(data: bytes) -> bytes:
    """zstd (a self-describing frame): five times zlib's speed here at a better ratio."""
    return _COMPRESSOR.compress(data)


def decompress(data: bytes) -> bytes:
    if data.startswith(_ZSTD_MAGIC):
        return _DECOMPRESSOR.decompress(data)
    return zlib.decompress(data)  # evidence written before the switch to zstd


def epoch_hour(moment: datetime) -> int:
    return int(moment.timestamp() // 3600)


def seen_at(report: AbuseReport, received_at: datetime) -> datetime:
    """When the report happened: its own date when plausible, else when we received it."""
    stated = report.report_date
    if stated is not None and EARLIEST_REPORT_DATE <= stated <= received_at + timedelta(days=1):
        return stated.astimezone(UTC)
    return received_at.astimezone(UTC)
