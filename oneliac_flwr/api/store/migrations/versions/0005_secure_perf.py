"""Secure-sum messages kept as an append-only log between stage snapshots.

``secure_runs.version`` counts the changes of the protocol state (a process may keep a
cached copy only while the version it was built at is current); ``secure_messages``
keeps each accepted message's record (and, for a masked upload, its vector as raw
little-endian ring elements) until the next stage change folds it into the snapshot.

Revision ID: 0005_secure_perf
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_secure_perf"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the version counter and the message log's columns (existing rows: already folded)."""
    op.add_column("secure_runs", sa.Column("version", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("secure_messages", sa.Column("record", sa.Text, nullable=True))
    op.add_column("secure_messages", sa.Column("masked", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    """Drop them (fold the log first: only a coordinator between stages may downgrade)."""
    with op.batch_alter_table("secure_messages") as batch:
        batch.drop_column("masked")
        batch.drop_column("record")
    with op.batch_alter_table("secure_runs") as batch:
        batch.drop_column("version")
