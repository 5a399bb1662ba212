"""Persistence of the REST coordinator: SQLAlchemy 2 tables, Alembic migrations, transactions."""

from oneliac_flwr.api.store.database import Database
from oneliac_flwr.api.store.models import (
    AuditEvent,
    Base,
    CoordinatorKey,
    ModelVersion,
    Organization,
    PrivacyLedgerRow,
    Round,
    SecureMessage,
    SecureNode,
    SecureRoundStage,
    SecureRun,
    SecureSnapshot,
    Submission,
)

__all__ = [
    "AuditEvent", "Base", "CoordinatorKey", "Database", "ModelVersion", "Organization", "PrivacyLedgerRow", "Round",
    "SecureMessage", "SecureNode", "SecureRoundStage", "SecureRun", "SecureSnapshot", "Submission",
]  # fmt: skip
