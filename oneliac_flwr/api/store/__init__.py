"""Persistence of the REST coordinator: SQLAlchemy 2 tables, Alembic migrations, transactions."""

from oneliac_flwr.api.store.database import Database
from oneliac_flwr.api.store.models import AuditEvent, Base, ModelVersion, Organization

__all__ = ["AuditEvent", "Base", "Database", "ModelVersion", "Organization"]
