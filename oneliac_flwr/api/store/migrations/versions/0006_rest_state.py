"""Server-optimizer state beside each model version; sealed payloads erased at round close.

- ``model_versions.server_state``: the inner strategy's server-optimizer state (FedAvgM's
  momentum, FedAdam/FedYogi/FedAdagrad's moments) as a safetensors file, written in the
  transaction that stores the version it produced; ``NULL`` for stateless strategies.
- ``submissions.payload`` becomes nullable: the sealed update is erased (``NULL``) when its
  round closes, while the row (body digest, receipt) stays for idempotency and audit.

Revision ID: 0006_rest_state
Revises: 0005_secure_perf
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_rest_state"
down_revision = "0005_secure_perf"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the state column; let a closed round's payload be erased."""
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("server_state", sa.LargeBinary, nullable=True))
    with op.batch_alter_table("submissions") as batch:
        batch.alter_column("payload", existing_type=sa.LargeBinary, nullable=True)


def downgrade() -> None:
    """Drop the state column; erased payloads become empty bytes."""
    op.execute(sa.text("UPDATE submissions SET payload = :empty WHERE payload IS NULL").bindparams(
        sa.bindparam("empty", b"", type_=sa.LargeBinary)))  # fmt: skip
    with op.batch_alter_table("submissions") as batch:
        batch.alter_column("payload", existing_type=sa.LargeBinary, nullable=False)
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("server_state")
