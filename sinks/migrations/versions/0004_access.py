"""The console: reports per hour; access to it: tokens (hashed), browser sessions, the audit log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


HOUR = {
    "sqlite": "CAST(strftime('%s', {column}) AS INTEGER) / 3600",
    "postgresql": "CAST(floor(extract(epoch FROM {column}) / 3600) AS INTEGER)",
}


def upgrade() -> None:
    op.create_table(
        "report_hours",
        sa.Column("hour", sa.Integer(), nullable=False, comment="hours since the Unix epoch (UTC)"),
        sa.Column("reports", sa.Integer(), nullable=False, comment="reports seen in the hour"),
        sa.Column("junk_reports", sa.Integer(), nullable=False),
        sa.Column("dead_letters", sa.Integer(), nullable=False, comment="dead letters received in the hour"),
        sa.PrimaryKeyConstraint("hour", name=op.f("pk_report_hours")),
    )
    bind = op.get_bind()
    hour = HOUR.get(bind.dialect.name)
    if hour is not None:  # what the store holds already, counted once
        reports, letters = hour.format(column="seen_at"), hour.format(column="received_at")
        op.execute(
            f"""INSERT INTO report_hours (hour, reports, junk_reports, dead_letters)
            SELECT hour, SUM(reports), SUM(junk), SUM(dead) FROM (
                SELECT {reports} AS hour, 1 AS reports, CASE WHEN junk THEN 1 ELSE 0 END AS junk, 0 AS dead
                FROM reports
                UNION ALL
                SELECT {letters} AS hour, 0, 0, 1 FROM deadletters
            ) AS counted GROUP BY hour"""
        )
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.create_index("ix_reports_message_id", ["message_id"], unique=False)
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, comment="viewer, analyst or admin"),
        sa.Column("secret_sha256", sa.String(64), nullable=False, comment="the token's secret part, hashed"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(32), nullable=False, comment="the public part of the session cookie"),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column(
            "csrf", sa.String(64), nullable=False, comment="the synchronizer token of this session's forms"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
    )
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_sessions_token_id"), ["token_id"], unique=False)
    op.create_table(
        "audit_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False, comment="the token's name, or cli:<user>"),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("web_sessions")
    op.drop_table("api_tokens")
    op.drop_table("report_hours")
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index("ix_reports_message_id")
