"""The delist portal: delisting requests and the outgoing-mail outbox

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "delist_requests",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False, comment="the requester's address (personal data)"),
        sa.Column("token_hash", sa.String(64), nullable=False, comment="SHA-256 of the link's secret"),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("client", sa.String(64), nullable=False, comment="the address the request came from"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, comment="the link's end"),
        sa.Column(
            "used_at", sa.DateTime(timezone=True), nullable=True, comment="when the link was used (once)"
        ),
        sa.Column(
            "state",
            sa.String(16),
            nullable=False,
            comment="mailed, delisted, queued, approved, refused, not-listed",
        ),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(100), nullable=True),
        sa.Column(
            "decision", sa.Text(), nullable=True, comment="the analyst's reason, sent to the requester"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delist_requests")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_delist_requests_token_hash")),
    )
    with op.batch_alter_table("delist_requests", schema=None) as batch_op:
        batch_op.create_index("ix_delist_requests_client", ["client", "created_at"], unique=False)
        batch_op.create_index("ix_delist_requests_email", ["email", "created_at"], unique=False)
        batch_op.create_index("ix_delist_requests_ip", ["ip", "created_at"], unique=False)
        batch_op.create_index("ix_delist_requests_state", ["state", "created_at"], unique=False)
    op.create_table(
        "outbox",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False, comment="delist-confirm, delist-decision, ..."),
        sa.Column("message", sa.LargeBinary(), nullable=False, comment="the RFC 5322 message as sent"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "last_error", sa.Text(), nullable=True, comment="the relay's last refusal or the connection error"
        ),
        sa.Column(
            "given_up_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when the relay refused it for good (5xx)",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_due", ["sent_at", "next_attempt_at"], unique=False)


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("delist_requests")
