"""The source's country on each report (offline enrichment), for `offenders --country`

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "source_country",
                sa.String(2),
                nullable=True,
                comment="the source's country (offline enrichment)",
            )
        )
        batch_op.create_index("ix_reports_source_country", ["source_country", "seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index("ix_reports_source_country")
        batch_op.drop_column("source_country")
