"""The blocked-senders list: listings, their history, and trap hits per hour

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

HOUR = {
    "sqlite": "CAST(strftime('%s', {column}) AS INTEGER) / 3600",
    "postgresql": "CAST(floor(extract(epoch FROM {column}) / 3600) AS INTEGER)",
}
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "offender_trap_hours",
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("key", sa.String(320), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("trap", sa.String(320), nullable=False, comment="the trap address that caught it"),
        sa.PrimaryKeyConstraint("kind", "key", "hour", "trap", name=op.f("pk_offender_trap_hours")),
    )
    with op.batch_alter_table("offender_trap_hours", schema=None) as batch_op:
        batch_op.create_index("ix_offender_trap_hours_window", ["kind", "hour"], unique=False)
    hour = HOUR.get(op.get_bind().dialect.name)
    if hour is not None:  # the trap hits a store holds already
        op.execute(
            f"""INSERT INTO offender_trap_hours (kind, key, hour, trap)
            SELECT DISTINCT o.kind, o.key, {hour.format(column="o.seen_at")}, r.reporter
            FROM report_offenders o JOIN reports r ON r.report_id = o.report_id
            WHERE r.format = 'trap' AND r.junk"""
        )
    op.create_table(
        "listings",
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("key", sa.String(320), nullable=False),
        sa.Column(
            "state", sa.String(16), nullable=False, comment="listed, delisted or expired (when stored)"
        ),
        sa.Column("origin", sa.String(16), nullable=False, comment="policy or manual"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reason_code", sa.String(40), nullable=False),
        sa.Column(
            "listed_at", sa.DateTime(timezone=True), nullable=False, comment="start of the current listing"
        ),
        sa.Column(
            "expires_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="NULL: a manual listing without a TTL",
        ),
        sa.Column("ttl_seconds", sa.Integer(), nullable=False, comment="the TTL of the current listing"),
        sa.Column("last_evidence_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "ended_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when it was last delisted or expired",
        ),
        sa.Column(
            "network",
            sa.String(64),
            nullable=True,
            comment="an IP's /24 or /48: network listings count their IPs",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", name=op.f("pk_listings")),
    )
    with op.batch_alter_table("listings", schema=None) as batch_op:
        batch_op.create_index("ix_listings_network", ["network"], unique=False)
        batch_op.create_index("ix_listings_state", ["state", "expires_at"], unique=False)
        batch_op.create_index("ix_listings_updated_at", ["updated_at"], unique=False)
    op.create_table(
        "listing_events",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("key", sa.String(320), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "event",
            sa.String(32),
            nullable=False,
            comment="listed, extended, delist-requested, delisted-by-sender, delisted-by-analyst, refused, "
            "expired, relisted",
        ),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listing_events")),
    )
    with op.batch_alter_table("listing_events", schema=None) as batch_op:
        batch_op.create_index("ix_listing_events_key", ["kind", "key", "at"], unique=False)


def downgrade() -> None:
    op.drop_table("listing_events")
    op.drop_table("listings")
    op.drop_table("offender_trap_hours")
