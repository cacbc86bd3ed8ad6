"""initial store schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 03:05:44.291837
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deadletters",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("input_sha256", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "source",
            sa.Text(),
            nullable=False,
            comment="where the message came from (path, mbox offset, stdin)",
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False, comment="zlib-compressed original bytes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deadletters")),
    )
    with op.batch_alter_table("deadletters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deadletters_input_sha256"), ["input_sha256"], unique=True)
        batch_op.create_index(batch_op.f("ix_deadletters_received_at"), ["received_at"], unique=False)

    op.create_table(
        "offender_hours",
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False, comment="hours since the Unix epoch (UTC)"),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("junk_reports", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", "hour", name=op.f("pk_offender_hours")),
    )
    with op.batch_alter_table("offender_hours", schema=None) as batch_op:
        batch_op.create_index("ix_offender_hours_window", ["kind", "hour"], unique=False)

    op.create_table(
        "offender_reporter_hours",
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("reporter", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", "hour", "reporter", name=op.f("pk_offender_reporter_hours")),
    )
    with op.batch_alter_table("offender_reporter_hours", schema=None) as batch_op:
        batch_op.create_index("ix_offender_reporter_hours_window", ["kind", "hour"], unique=False)

    op.create_table(
        "offender_reporters",
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("reporter", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", "reporter", name=op.f("pk_offender_reporters")),
    )
    op.create_table(
        "offenders",
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("junk_reports", sa.Integer(), nullable=False),
        sa.Column("reporters", sa.Integer(), nullable=False, comment="distinct reporters of junk"),
        sa.Column("n_abuse", sa.Integer(), nullable=False),
        sa.Column("n_fraud", sa.Integer(), nullable=False),
        sa.Column("n_virus", sa.Integer(), nullable=False),
        sa.Column("n_other", sa.Integer(), nullable=False),
        sa.Column("n_not_spam", sa.Integer(), nullable=False),
        sa.Column("n_auth_failure", sa.Integer(), nullable=False),
        sa.Column("n_opt_out", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", name=op.f("pk_offenders")),
    )
    with op.batch_alter_table("offenders", schema=None) as batch_op:
        batch_op.create_index("ix_offenders_by_reporters", ["kind", "reporters"], unique=False)
        batch_op.create_index("ix_offenders_by_reports", ["kind", "junk_reports"], unique=False)

    op.create_table(
        "raw_messages",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False, comment="zlib-compressed original bytes"),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_raw_messages")),
    )
    op.create_table(
        "report_offenders",
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", "report_id", name=op.f("pk_report_offenders")),
    )
    with op.batch_alter_table("report_offenders", schema=None) as batch_op:
        batch_op.create_index("ix_report_offenders_latest", ["kind", "key", "seen_at"], unique=False)
        batch_op.create_index("ix_report_offenders_report", ["report_id"], unique=False)

    op.create_table(
        "report_urls",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("host", sa.String(length=320), nullable=True),
        sa.Column("registrable_domain", sa.String(length=320), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_urls")),
    )
    with op.batch_alter_table("report_urls", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_report_urls_registrable_domain"), ["registrable_domain"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_report_urls_report_id"), ["report_id"], unique=False)

    op.create_table(
        "reports",
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("input_sha256", sa.String(length=64), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=40), nullable=False),
        sa.Column("feedback_type", sa.String(length=40), nullable=False),
        sa.Column("junk", sa.Boolean(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reporter", sa.String(length=320), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("handoff_ip", sa.String(length=64), nullable=True),
        sa.Column("platform", sa.String(length=40), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("from_domain", sa.String(length=320), nullable=True),
        sa.Column("mail_from_domain", sa.String(length=320), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("document", sa.Text(), nullable=False, comment="the normalized report as JSON"),
        sa.PrimaryKeyConstraint("report_id", name=op.f("pk_reports")),
    )
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reports_input_sha256"), ["input_sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_reports_seen_at"), ["seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reports_seen_at"))
        batch_op.drop_index(batch_op.f("ix_reports_input_sha256"))

    op.drop_table("reports")
    with op.batch_alter_table("report_urls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_urls_report_id"))
        batch_op.drop_index(batch_op.f("ix_report_urls_registrable_domain"))

    op.drop_table("report_urls")
    with op.batch_alter_table("report_offenders", schema=None) as batch_op:
        batch_op.drop_index("ix_report_offenders_report")
        batch_op.drop_index("ix_report_offenders_latest")

    op.drop_table("report_offenders")
    op.drop_table("raw_messages")
    with op.batch_alter_table("offenders", schema=None) as batch_op:
        batch_op.drop_index("ix_offenders_by_reports")
        batch_op.drop_index("ix_offenders_by_reporters")

    op.drop_table("offenders")
    op.drop_table("offender_reporters")
    with op.batch_alter_table("offender_reporter_hours", schema=None) as batch_op:
        batch_op.drop_index("ix_offender_reporter_hours_window")

    op.drop_table("offender_reporter_hours")
    with op.batch_alter_table("offender_hours", schema=None) as batch_op:
        batch_op.drop_index("ix_offender_hours_window")

    op.drop_table("offender_hours")
    with op.batch_alter_table("deadletters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deadletters_received_at"))
        batch_op.drop_index(batch_op.f("ix_deadletters_input_sha256"))

    op.drop_table("deadletters")
