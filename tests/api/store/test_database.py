"""Read-only snapshots of the coordinator's database (:meth:`Database.read`)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event, select, text

from oneliac_flwr.api.secure_rounds import SecureRounds
from oneliac_flwr.api.store import AuditEvent, Database


def _migrated(url: str) -> Iterator[Database]:
    database = Database(url)
    try:
        database.migrate()
        yield database
    finally:
        database.dispose()


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated database on each backend, disposed at the end."""
    yield from _migrated(database_url)


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database, disposed at the end."""
    yield from _migrated(f"sqlite:///{tmp_path / 'coordinator.db'}")


def _event(detail: str) -> AuditEvent:
    return AuditEvent(at=datetime.now(UTC), actor="test", action="test.event", organization_id=None, detail=detail)


def _details(database: Database) -> list[str]:
    with database.read() as session:
        return list(session.scalars(select(AuditEvent.detail).order_by(AuditEvent.id)))


def test_a_read_neither_waits_for_a_writer_nor_sees_its_uncommitted_rows(database: Database) -> None:
    with database.transaction() as session:
        session.add(_event("committed"))
    seen: list[list[str]] = []
    with database.transaction() as session:  # holds the write lock (SQLite: BEGIN IMMEDIATE)
        session.add(_event("pending"))
        session.flush()
        reader = threading.Thread(target=lambda: seen.append(_details(database)), daemon=True)
        reader.start()
        reader.join(timeout=20)  # a read that waited for the lock would still be blocked here
        assert not reader.is_alive(), "the read waited for the writer's lock"
    assert seen == [["committed"]]
    assert _details(database) == ["committed", "pending"]


def test_what_a_read_adds_is_discarded(database: Database) -> None:
    with database.read() as session:
        session.add(_event("never stored"))
        rows = list(session.scalars(select(AuditEvent)))  # no autoflush: the read stays read-only
    assert rows == []
    assert _details(database) == []


def test_a_row_loaded_in_a_session_is_not_queried_again_in_it(database: Database) -> None:
    with database.transaction() as session:
        session.add(_event("loaded"))
    statements: list[str] = []
    event.listen(database.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    for open_session in (database.read, database.transaction):
        with open_session() as session:
            (row_id,) = [e.id for e in session.scalars(select(AuditEvent))]  # the object is not kept here
            gc.collect()
            statements.clear()
            assert session.get(AuditEvent, row_id).detail == "loaded"
            assert statements == []  # found in the session, not read again


def test_erasing_the_stage_log_restores_secure_delete_on_the_connection(sqlite_database: Database) -> None:
    for zero_fill in (False, True):  # without zero fill, its one statement runs with secure_delete off
        with sqlite_database.transaction() as session:
            SecureRounds._erase_log(session, zero_fill=zero_fill)
            assert session.execute(text("PRAGMA secure_delete")).scalar() == 1
    with sqlite_database.transaction() as session:  # the pooled connection the next state change gets
        assert session.execute(text("PRAGMA secure_delete")).scalar() == 1
