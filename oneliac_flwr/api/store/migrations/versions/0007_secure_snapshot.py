"""The secure-sum snapshot in its own table, apart from the run's small per-message counters.

``secure_runs`` keeps the run id, ``version`` and ``updated_at``, which change with every
accepted stage message; the protocol-state snapshot (``state``) and the open round's
masked running total (``total``: raw ring elements, 8 bytes per parameter) move to
``secure_snapshots`` (one row, ``id`` 1), written only at a stage change. On SQLite a row
is one record, its large values in chained overflow pages: with the total in the run's
row, every counter update rewrote the whole total (megabytes per message at 1M
parameters) and every read of the counters walked it.

Revision ID: 0007_secure_snapshot
Revises: 0006_rest_state
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_secure_snapshot"
down_revision = "0006_rest_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``secure_snapshots``, move the snapshot into it, drop the columns it had."""
    op.create_table(
        "secure_snapshots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("total", sa.LargeBinary, nullable=True),
    )
    op.execute("INSERT INTO secure_snapshots (id, state, total) SELECT id, state, total FROM secure_runs")
    with op.batch_alter_table("secure_runs") as batch:
        batch.drop_column("total")
        batch.drop_column("state")


def downgrade() -> None:
    """Put the snapshot back into ``secure_runs`` and drop ``secure_snapshots``."""
    with op.batch_alter_table("secure_runs") as batch:
        batch.add_column(sa.Column("state", sa.Text, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("total", sa.LargeBinary, nullable=True))
    op.execute("UPDATE secure_runs SET state = (SELECT s.state FROM secure_snapshots s WHERE s.id = secure_runs.id), "
               "total = (SELECT s.total FROM secure_snapshots s WHERE s.id = secure_runs.id)")  # fmt: skip
    op.drop_table("secure_snapshots")
