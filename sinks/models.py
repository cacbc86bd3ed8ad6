"""The SQL schema of the report store (SQLAlchemy 2 Core tables; Alembic migrations create them).

Offender aggregates are maintained on write so that analyst queries never scan reports: totals per
offender, hourly buckets for windows, and reporter sets for distinct-reporter counts. Every index serves
a query in `sinks.queries` or a uniqueness rule; each one costs write throughput.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

EVIDENCE_COMMENT = "original bytes, zstd-compressed (zlib in rows written before migration 0002)"
KEY = 320  # an e-mail domain or URL host fits; longer keys are truncated by the writer

raw_messages = Table(
    "raw_messages",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False, comment=EVIDENCE_COMMENT),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

reports = Table(
    "reports",
    metadata,
    Column("report_id", String(64), primary_key=True),
    Column("input_sha256", String(64), nullable=False),
    Column("part", Integer, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("format", String(40), nullable=False),
    Column("feedback_type", String(40), nullable=False),
    Column("junk", Boolean, nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("reporter", String(KEY), nullable=False),
    Column("source_ip", String(64)),
    Column("handoff_ip", String(64)),
    Column("platform", String(40)),
    Column("tenant_id", String(64)),
    Column("from_domain", String(KEY)),
    Column("mail_from_domain", String(KEY)),
    Column("message_id", Text),
    Column("subject", Text),
    Column("document", Text, nullable=False, comment="the normalized report as JSON"),
    Column("source_country", String(2), comment="the source's country (offline enrichment)"),
    Index("ix_reports_message_id", "message_id"),  # the console's search by Message-ID
    Index("ix_reports_source_country", "source_country", "seen_at"),  # offenders --country
)

report_urls = Table(
    "report_urls",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("report_id", String(64), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("host", String(KEY)),
    Column("registrable_domain", String(KEY)),
)

report_offenders = Table(
    "report_offenders",
    metadata,
    # The primary key leads with report_id: it also serves "the keys of these reports" (related keys).
    Column("report_id", String(64), primary_key=True),
    Column("kind", String(24), primary_key=True),
    Column("key", String(KEY), primary_key=True),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Index("ix_report_offenders_latest", "kind", "key", "seen_at"),
)

FEEDBACK_COLUMNS = {
    "abuse": "n_abuse",
    "fraud": "n_fraud",
    "virus": "n_virus",
    "other": "n_other",
    "not-spam": "n_not_spam",
    "auth-failure": "n_auth_failure",
    "opt-out": "n_opt_out",
}

offenders = Table(
    "offenders",
    metadata,
    Column("kind", String(24), primary_key=True),
    Column("key", String(KEY), primary_key=True),
    Column("reports", Integer, nullable=False),
    Column("junk_reports", Integer, nullable=False),
    Column("reporters", Integer, nullable=False, comment="distinct reporters of junk"),
    *(Column(name, Integer, nullable=False) for name in FEEDBACK_COLUMNS.values()),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Index("ix_offenders_by_reports", "kind", "junk_reports"),
    Index("ix_offenders_by_reporters", "kind", "reporters"),
)

offender_hours = Table(
    "offender_hours",
    metadata,
    Column("kind", String(24), primary_key=True),
    Column("key", String(KEY), primary_key=True),
    Column("hour", Integer, primary_key=True, comment="hours since the Unix epoch (UTC)"),
    Column("reports", Integer, nullable=False),
    Column("junk_reports", Integer, nullable=False),
    Index("ix_offender_hours_window", "kind", "hour"),
)

offender_reporters = Table(
    "offender_reporters",
    metadata,
    Column("kind", String(24), primary_key=True),
    Column("key", String(KEY), primary_key=True),
    Column("reporter", String(KEY), primary_key=True),
)

offender_reporter_hours = Table(
    "offender_reporter_hours",
    metadata,
    Column("kind", String(24), primary_key=True),
    Column("key", String(KEY), primary_key=True),
    Column("hour", Integer, primary_key=True),
    Column("reporter", String(KEY), primary_key=True),
    Index("ix_offender_reporter_hours_window", "kind", "hour"),
)

deadletters = Table(
    "deadletters",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("input_sha256", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", Text, nullable=False, comment="where the message came from (path, mbox offset, stdin)"),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("size", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False, comment=EVIDENCE_COMMENT),
    Index("ix_deadletters_input_sha256", "input_sha256", unique=True),  # the same bytes are kept once
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("group_id", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column(
        "next_offset",
        BigInteger,
        nullable=False,
        comment="the next Kafka offset to read; written with the records before it",
    ),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

kafka_chunks = Table(
    "kafka_chunks",
    metadata,
    Column("stream", String(16), primary_key=True, comment="evidence or deadletter"),
    Column("sha256", String(64), primary_key=True),
    Column("chunk", Integer, primary_key=True),
    Column("chunks", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    comment="chunks of a large input read from Kafka, held until its last chunk arrives",
)

# --- the console's overview, access to it (migration 0004) ----------------------------------------------

report_hours = Table(
    "report_hours",
    metadata,
    Column("hour", Integer, primary_key=True, comment="hours since the Unix epoch (UTC)"),
    Column("reports", Integer, nullable=False, comment="reports seen in the hour"),
    Column("junk_reports", Integer, nullable=False),
    Column("dead_letters", Integer, nullable=False, comment="dead letters received in the hour"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(16), nullable=False, comment="viewer, analyst or admin"),
    Column("secret_sha256", String(64), nullable=False, comment="the token's secret part, hashed"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", String(32), primary_key=True, comment="the public part of the session cookie"),
    Column("secret_sha256", String(64), nullable=False),
    Column("token_id", Integer, nullable=False, index=True),
    Column("csrf", String(64), nullable=False, comment="the synchronizer token of this session's forms"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("actor", String(100), nullable=False, comment="the token's name, or cli:<user>"),
    Column("action", String(40), nullable=False),
    Column("target", Text, nullable=False),
    Column("client", String(64), nullable=False),
)

# --- the blocked-senders list (migration 0005) -----------------------------------------------------------

offender_trap_hours = Table(
    "offender_trap_hours",
    metadata,
    Column("kind", String(24), primary_key=True),
    Column("key", String(KEY), primary_key=True),
    Column("hour", Integer, primary_key=True),
    Column("trap", String(KEY), primary_key=True, comment="the trap address that caught it"),
    Index("ix_offender_trap_hours_window", "kind", "hour"),
)

listings = Table(
    "listings",
    metadata,
    Column("kind", String(24), primary_key=True),
    Column("key", String(KEY), primary_key=True),
    Column("state", String(16), nullable=False, comment="listed, delisted or expired (when stored)"),
    Column("origin", String(16), nullable=False, comment="policy or manual"),
    Column("reason", Text, nullable=False),
    Column("reason_code", String(40), nullable=False),
    Column("listed_at", DateTime(timezone=True), nullable=False, comment="start of the current listing"),
    Column("expires_at", DateTime(timezone=True), comment="NULL: a manual listing without a TTL"),
    Column("ttl_seconds", Integer, nullable=False, comment="the TTL of the current listing"),
    Column("last_evidence_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True), comment="when it was last delisted or expired"),
    Column("network", String(64), comment="an IP's /24 or /48: network listings count their IPs"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_listings_state", "state", "expires_at"),
    Index("ix_listings_network", "network"),
    Index("ix_listings_updated_at", "updated_at"),  # what changed since the policy server last looked
)

listing_events = Table(
    "listing_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(24), nullable=False),
    Column("key", String(KEY), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column(
        "event",
        String(32),
        nullable=False,
        comment="listed, extended, delist-requested, delisted-by-sender, delisted-by-analyst, refused, "
        "expired, relisted",
    ),
    Column("actor", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_listing_events_key", "kind", "key", "at"),
)

delist_requests = Table(
    "delist_requests",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ip", String(64), nullable=False),
    Column("email", String(254), nullable=False, comment="the requester's address (personal data)"),
    Column("token_hash", String(64), nullable=False, unique=True, comment="SHA-256 of the link's secret"),
    Column("lang", String(8), nullable=False),
    Column("client", String(64), nullable=False, comment="the address the request came from"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, comment="the link's end"),
    Column("used_at", DateTime(timezone=True), comment="when the link was used (once)"),
    Column(
        "state",
        String(16),
        nullable=False,
        comment="mailed, delisted, queued, approved, refused, not-listed",
    ),
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", String(100)),
    Column("decision", Text, comment="the analyst's reason, sent to the requester"),
    Index("ix_delist_requests_ip", "ip", "created_at"),
    Index("ix_delist_requests_email", "email", "created_at"),
    Index("ix_delist_requests_state", "state", "created_at"),
    Index("ix_delist_requests_client", "client", "created_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("recipient", String(254), nullable=False),
    Column("purpose", String(32), nullable=False, comment="delist-confirm, delist-decision, ..."),
    Column("message", LargeBinary, nullable=False, comment="the RFC 5322 message as sent"),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("last_error", Text, comment="the relay's last refusal or the connection error"),
    Column("given_up_at", DateTime(timezone=True), comment="set when the relay refused it for good (5xx)"),
    Index("ix_outbox_due", "sent_at", "next_attempt_at"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("ip", String(64), primary_key=True),
    Column("contact", String(254), comment="the abuse address; NULL: none found"),
    Column("origin", String(16), nullable=False, comment="abusix, rdap or none"),
    Column("detail", Text, comment="where exactly: the DNS name asked, the RDAP URL and range"),
    Column("rdns", String(253), comment="the PTR name"),
    Column("rdns_confirmed", Boolean, nullable=False, comment="the name resolves back to the address"),
    Column("error", Text, comment="why a source could not be asked (the entry then expires sooner)"),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("contact", String(254), nullable=False),
    Column("kind", String(16), nullable=False, comment="arf, digest or microsoft"),
    Column("reports", Integer, nullable=False),
    Column("mails", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_notifications_contact", "contact", "at"),
)

notified_reports = Table(
    "notified_reports",
    metadata,
    Column("report_id", String(64), primary_key=True, comment="carried by a notification: not sent again"),
    Column("notification_id", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
)

feed_keys = Table(
    "feed_keys",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("network", String(64), nullable=False, comment="the range whose data the key reads"),
    Column("contact", String(254), nullable=False, comment="the range's RDAP abuse contact, who confirmed"),
    Column("client", String(64), nullable=False),
    Column("confirm_hash", String(64), nullable=False, unique=True, comment="SHA-256 of the mailed link"),
    Column("confirm_expires_at", DateTime(timezone=True), nullable=False),
    Column("key_hash", String(64), unique=True, comment="SHA-256 of the feed key, once confirmed"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("confirmed_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_feed_keys_client", "client", "created_at"),
)
