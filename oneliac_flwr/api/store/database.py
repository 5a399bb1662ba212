"""Engine, migrations and transactions of the coordinator's database.

SQLite (the default) runs in WAL mode with a busy timeout and ``BEGIN IMMEDIATE``
transactions, so writers from several processes queue instead of failing; PostgreSQL is
reached through psycopg 3 (``postgresql+psycopg://``).

Reads that change nothing (status, long polls, downloads) go through :meth:`Database.read`:
a snapshot that never takes the write lock (SQLite: a deferred ``BEGIN`` in WAL mode;
PostgreSQL: a ``REPEATABLE READ, READ ONLY`` transaction), so they neither wait for nor
delay the writers.
"""

from __future__ import annotations

from collections.abc import Iterator
import threading
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database"]

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x0E11AC  # PostgreSQL advisory-lock key held while migrating
_READ_ONLY = "oneliac_read_only"  # execution option of Database.read's connections
WAL_AUTOCHECKPOINT_PAGES = 25_000
#: pooled connections per process, and how many more a burst may open (closed on return)
POOL_SIZE, POOL_OVERFLOW = 20, 20


class Database:
    """One coordinator database.

    Parameters
    ----------
    url : str
        SQLAlchemy URL (``coordinator.database_url``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        connect_args = {"timeout": 30, "isolation_level": None} if self.is_sqlite else {}
        # the pool keeps up to POOL_SIZE connections (long polls and waiting stage messages
        # hold none while they wait); one opened beyond it is closed on return, and opened
        # again for the next request (SQLite: its PRAGMAs too). PostgreSQL: a process may hold
        # POOL_SIZE + POOL_OVERFLOW connections, so two processes fit in max_connections 100
        in_memory = self.is_sqlite and make_url(url).database in (None, "", ":memory:")  # one connection, no queue
        pool = {} if in_memory else {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=not self.is_sqlite, **pool)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer: AbstractContextManager[Any] = threading.RLock() if self.is_sqlite else nullcontext()
        self._readers = sessionmaker(self.engine.execution_options(**{_READ_ONLY: True}), autoflush=False)
        for factory in (self._sessions, self._readers):
            event.listen(factory, "loaded_as_persistent", _keep_loaded)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (safe at every start, and from
        several processes at once: SQLite's immediate transaction or a PostgreSQL advisory
        lock serialises them)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            if not self.is_sqlite:  # processes starting together migrate one at a time
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One state change: committed on success, rolled back on any exception.

        On SQLite the threads of this process queue for the write lock on a mutex (woken
        at once when it is free) rather than in SQLite's busy handler, which polls with
        sleeps; other processes still queue in the busy handler.
        """
        with self._writer, self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only snapshot: no write lock is taken, and it is always rolled back (on
        PostgreSQL a write fails at once: the transaction is ``READ ONLY``)."""
        with self._readers() as session:
            session.begin()
            try:
                if not self.is_sqlite:
                    session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
                yield session
            finally:
                session.expunge_all()  # what was read stays readable after the rollback
                session.rollback()

    def checkpoint(self) -> None:
        """SQLite: copy the committed write-ahead log into the database file without blocking
        readers or writers (``PRAGMA wal_checkpoint(PASSIVE)``), called by the service's
        ticker. A commit then never pays for the copy (SQLite's default is to checkpoint
        inside the commit that fills 1000 pages, i.e. inside every 4 MB masked upload at 1M
        parameters). PostgreSQL: nothing to do."""
        if not self.is_sqlite:
            return
        with self.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _keep_loaded(session: Session, instance: object) -> None:
    """Hold every object a session loads for the session's life (one request or one state
    change): the identity map references them weakly, so without this a second
    ``session.get`` of a row loaded earlier in the same transaction would query it again."""
    session.info.setdefault("loaded", []).append(instance)


def _sqlite_connect(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API objects
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # erased updates are overwritten in the file, not left in free pages
    cursor.execute("PRAGMA busy_timeout=30000")
    # the ticker checkpoints the WAL in the background (Database.checkpoint); a commit that
    # finds it this large (about 100 MB) does it itself, so the file stays bounded without it
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.close()


def _sqlite_begin(connection) -> None:  # noqa: ANN001 - SQLAlchemy connection
    # pysqlite's own BEGIN is disabled (isolation_level=None): a writer takes the write lock
    # at once; a reader takes a WAL snapshot at its first read and never the write lock
    read_only = connection.get_execution_options().get(_READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
