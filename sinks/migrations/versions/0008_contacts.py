"""Abuse contacts and reverse DNS (cached), what onward reporting sent, network owners' feed keys

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("contact", sa.String(254), nullable=True, comment="the abuse address; NULL: none found"),
        sa.Column("origin", sa.String(16), nullable=False, comment="abusix, rdap or none"),
        sa.Column(
            "detail",
            sa.Text(),
            nullable=True,
            comment="where exactly: the DNS name asked, the RDAP URL and range",
        ),
        sa.Column("rdns", sa.String(253), nullable=True, comment="the PTR name"),
        sa.Column(
            "rdns_confirmed", sa.Boolean(), nullable=False, comment="the name resolves back to the address"
        ),
        sa.Column(
            "error",
            sa.Text(),
            nullable=True,
            comment="why a source could not be asked (the entry then expires sooner)",
        ),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ip", name=op.f("pk_contacts")),
    )
    op.create_table(
        "notifications",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("contact", sa.String(254), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, comment="arf, digest or microsoft"),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("mails", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_contact", ["contact", "at"], unique=False)
    op.create_table(
        "notified_reports",
        sa.Column(
            "report_id", sa.String(64), nullable=False, comment="carried by a notification: not sent again"
        ),
        sa.Column("notification_id", BIGINT, nullable=False),
        sa.PrimaryKeyConstraint("report_id", name=op.f("pk_notified_reports")),
    )
    op.create_table(
        "feed_keys",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("network", sa.String(64), nullable=False, comment="the range whose data the key reads"),
        sa.Column(
            "contact", sa.String(254), nullable=False, comment="the range's RDAP abuse contact, who confirmed"
        ),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("confirm_hash", sa.String(64), nullable=False, comment="SHA-256 of the mailed link"),
        sa.Column("confirm_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "key_hash", sa.String(64), nullable=True, comment="SHA-256 of the feed key, once confirmed"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_keys")),
        sa.UniqueConstraint("confirm_hash", name=op.f("uq_feed_keys_confirm_hash")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_feed_keys_key_hash")),
    )
    with op.batch_alter_table("feed_keys", schema=None) as batch_op:
        batch_op.create_index("ix_feed_keys_client", ["client", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("feed_keys")
    op.drop_table("notified_reports")
    op.drop_table("notifications")
    op.drop_table("contacts")
