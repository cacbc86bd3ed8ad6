"""Lighter writes: drop indexes no query uses; cheaper TOAST storage on PostgreSQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 03:46:54.634665
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

EVIDENCE = "original bytes, zstd-compressed (zlib in rows written before migration 0002)"

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deadletters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deadletters_received_at"))

    with op.batch_alter_table("report_urls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_urls_registrable_domain"))

    with op.batch_alter_table("report_offenders", schema=None) as batch_op:
        batch_op.drop_index("ix_report_offenders_report")
        batch_op.drop_constraint("pk_report_offenders", type_="primary")
        batch_op.create_primary_key("pk_report_offenders", ["report_id", "kind", "key"])

    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reports_input_sha256"))
        batch_op.drop_index(batch_op.f("ix_reports_seen_at"))

    if op.get_bind().dialect.name == "postgresql":
        for table in ("raw_messages", "deadletters"):
            op.alter_column(
                table,
                "data",
                existing_type=sa.LargeBinary(),
                existing_nullable=False,
                comment=EVIDENCE,
                existing_comment="zlib-compressed original bytes",
            )
        # Evidence is compressed already: PostgreSQL's own compression would only burn CPU.
        op.execute("ALTER TABLE raw_messages ALTER COLUMN data SET STORAGE EXTERNAL")
        op.execute("ALTER TABLE deadletters ALTER COLUMN data SET STORAGE EXTERNAL")
        # lz4 compresses report documents several times faster than the default pglz, where built in.
        op.execute(
            """
            DO $$ BEGIN
                ALTER TABLE reports ALTER COLUMN document SET COMPRESSION lz4;
            EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
                RAISE NOTICE 'lz4 not available: report documents keep the default compression';
            END $$
            """
        )


def downgrade() -> None:
    with op.batch_alter_table("report_offenders", schema=None) as batch_op:
        batch_op.drop_constraint("pk_report_offenders", type_="primary")
        batch_op.create_primary_key("pk_report_offenders", ["kind", "key", "report_id"])
        batch_op.create_index("ix_report_offenders_report", ["report_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        for table in ("raw_messages", "deadletters"):
            op.alter_column(
                table,
                "data",
                existing_type=sa.LargeBinary(),
                existing_nullable=False,
                comment="zlib-compressed original bytes",
                existing_comment=EVIDENCE,
            )
        op.execute("ALTER TABLE raw_messages ALTER COLUMN data SET STORAGE EXTENDED")
        op.execute("ALTER TABLE deadletters ALTER COLUMN data SET STORAGE EXTENDED")
        op.execute("ALTER TABLE reports ALTER COLUMN document SET COMPRESSION default")
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reports_seen_at"), ["seen_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_reports_input_sha256"), ["input_sha256"], unique=False)

    with op.batch_alter_table("report_urls", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_report_urls_registrable_domain"), ["registrable_domain"], unique=False
        )

    with op.batch_alter_table("deadletters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deadletters_received_at"), ["received_at"], unique=False)
