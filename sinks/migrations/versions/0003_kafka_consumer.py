"""Kafka consumer state: offsets stored with the data they cover; chunks of large inputs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 05:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OFFSET_COMMENT = "the next Kafka offset to read; written with the records before it"


def upgrade() -> None:
    op.create_table(
        "consumer_offsets",
        sa.Column("group_id", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column(
            "next_offset",
            sa.BigInteger(),
            nullable=False,
            comment=OFFSET_COMMENT,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "topic", "partition", name=op.f("pk_consumer_offsets")),
    )
    op.create_table(
        "kafka_chunks",
        sa.Column("stream", sa.String(16), nullable=False, comment="evidence or deadletter"),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "sha256", "chunk", name=op.f("pk_kafka_chunks")),
        comment="chunks of a large input read from Kafka, held until its last chunk arrives",
    )


def downgrade() -> None:
    op.drop_table("kafka_chunks")
    op.drop_table("consumer_offsets")
