"""Secure-sum rounds over REST: node ids, the run's protocol state, stages, accepted messages.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the secure-sum tables."""
    op.create_table(
        "secure_nodes",
        sa.Column("organization_id", sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("node_id", sa.BigInteger, nullable=False, unique=True),
    )
    op.create_table(
        "secure_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("total", sa.LargeBinary, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "secure_round_stages",
        sa.Column("round", sa.Integer, sa.ForeignKey("rounds.number"), primary_key=True, autoincrement=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("stage_deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_pass", sa.Integer, nullable=False),
        sa.Column("expected", sa.Text, nullable=False),
        sa.Column("dropouts", sa.Text, nullable=False),
    )
    op.create_table(
        "secure_messages",
        sa.Column("round", sa.Integer, sa.ForeignKey("rounds.number"), primary_key=True),
        sa.Column("organization_id", sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("stage", sa.String(20), primary_key=True),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("receipt", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("secure_messages")
    op.drop_table("secure_round_stages")
    op.drop_table("secure_runs")
    op.drop_table("secure_nodes")
