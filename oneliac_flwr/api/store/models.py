"""SQLAlchemy 2 tables of the coordinator (the schema itself is made by Alembic)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AuditEvent", "Base", "CoordinatorKey", "ModelVersion", "Organization", "PrivacyLedgerRow", "Round",
    "SecureMessage", "SecureNode", "SecureRoundStage", "SecureRun", "SecureSnapshot", "Submission",
]  # fmt: skip


class Base(DeclarativeBase):
    """Declarative base of the coordinator's tables."""


class Organization(Base):
    """A registered hospital; its API key is kept only as a SHA-256 hash."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    endpoint: Mapped[str] = mapped_column(String(2048))
    encryption_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    identity_key: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelVersion(Base):
    """A kept global model: safetensors bytes, checksum, round and provenance."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(40), primary_key=True)
    training_round: Mapped[int] = mapped_column(Integer, unique=True)
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    contributors: Mapped[int] = mapped_column(Integer, default=0)
    accuracy: Mapped[float | None] = mapped_column(nullable=True)
    epsilon_spent: Mapped[float | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # the server optimizer's state after producing this version (safetensors), NULL if stateless
    server_state: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class AuditEvent(Base):
    """What happened, by whom; never a secret nor an update."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(60))
    organization_id: Mapped[str | None] = mapped_column(ForeignKey("organizations.id"), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")


class CoordinatorKey(Base):
    """The coordinator's X25519 key pair that fedavg submissions are sealed to (one row)."""

    __tablename__ = "coordinator_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    private_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Round(Base):
    """A training round: its roster is fixed when it opens; it closes at its deadline or
    when every organization on the roster has submitted."""

    __tablename__ = "rounds"

    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    base_version: Mapped[str] = mapped_column(String(40))
    roster: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    report: Mapped[str] = mapped_column(Text, default="{}")


class Submission(Base):
    """One organization's sealed update for one round (kept sealed at rest).

    ``payload`` is erased (``NULL``) in the transaction that closes the round, unless
    ``coordinator.keep_sealed_updates``; the digest and receipt stay for idempotency.
    """

    __tablename__ = "submissions"

    round: Mapped[int] = mapped_column(ForeignKey("rounds.number"), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    receipt: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sample_count: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PrivacyLedgerRow(Base):
    """The federation's differential-privacy ledger (one row): the
    :meth:`~oneliac_flwr.privacy.PrivacyLedger.to_signed_dict` document, HMAC-tagged."""

    __tablename__ = "privacy_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SecureNode(Base):
    """The stable secure-sum node id (u64, below 2^63 so PostgreSQL's BIGINT holds it) of an organization."""

    __tablename__ = "secure_nodes"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    node_id: Mapped[int] = mapped_column(BigInteger, unique=True)


class SecureRun(Base):
    """The federation's secure-sum run: its id and the protocol state's change counter (one row).

    ``version`` counts every change of the protocol state (snapshot or message), so a
    process may reuse a copy of the state built at the current version. The state itself is
    in :class:`SecureSnapshot` (large values stay out of this row, which every message updates).
    """

    __tablename__ = "secure_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class SecureSnapshot(Base):
    """The coordinator's protocol state at the last stage change (one row, ``id`` 1).

    ``state`` is :meth:`SecureSumServer.state_dict` through the JSON record codec, without
    the open round's masked running total, which is ``total`` (raw ring elements); the
    messages accepted since are in ``secure_messages`` (``record`` not null).
    """

    __tablename__ = "secure_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(Text)
    total: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class SecureRoundStage(Base):
    """Where a secure-sum round is: ``keys``, ``masking``, ``consistency`` (malicious mode), ``unmasking``,
    ``done`` or ``failed``."""

    __tablename__ = "secure_round_stages"

    round: Mapped[int] = mapped_column(ForeignKey("rounds.number"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(20))
    stage_deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_pass: Mapped[int] = mapped_column(Integer, default=0)
    expected: Mapped[str] = mapped_column(Text, default="[]")  # organizations this stage waits for
    dropouts: Mapped[str] = mapped_column(Text, default="{}")  # stage -> organizations missing at its close


class SecureMessage(Base):
    """One accepted stage message: replay detection, and (until the next stage change folds
    it into the ``secure_runs`` snapshot) its content: ``record`` (JSON record codec) and,
    for a masked upload, ``masked`` (raw little-endian ring elements)."""

    __tablename__ = "secure_messages"

    round: Mapped[int] = mapped_column(ForeignKey("rounds.number"), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(20), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    receipt: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    record: Mapped[str | None] = mapped_column(Text, nullable=True, deferred=True)
    masked: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
