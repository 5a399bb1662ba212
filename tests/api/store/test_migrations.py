"""Migration ``0007_secure_snapshot``: the secure-sum snapshot leaves the per-message run row."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from oneliac_flwr.api.store import Database, SecureRun, SecureSnapshot
from oneliac_flwr.api.store.database import MIGRATIONS


def _to(database: Database, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def test_an_upgrade_moves_the_stored_snapshot_and_a_downgrade_puts_it_back(database_url: str) -> None:
    database = Database(database_url)
    total = bytes(range(256)) * 64
    try:
        _to(database, "0006_rest_state")
        with database.engine.begin() as connection:  # a run stored by the previous release, mid-round
            connection.execute(text("INSERT INTO secure_runs (id, run_id, state, total, updated_at, version) "
                                    "VALUES (1, 42, :state, :total, :at, 7)"),
                               {"state": '{"round": {"n": 3}}', "total": total, "at": datetime.now(UTC)})  # fmt: skip
        database.migrate()
        assert {c["name"] for c in inspect(database.engine).get_columns("secure_runs")} == {
            "id", "run_id", "updated_at", "version"}  # fmt: skip
        with database.read() as session:
            run, snapshot = session.get(SecureRun, 1), session.get(SecureSnapshot, 1)
            assert run is not None and (run.run_id, run.version) == (42, 7)
            assert snapshot is not None and (snapshot.state, snapshot.total) == ('{"round": {"n": 3}}', total)
        _to(database, "0006_rest_state", down=True)
        assert "secure_snapshots" not in inspect(database.engine).get_table_names()
        with database.engine.connect() as connection:
            row = connection.execute(text("SELECT state, total, version FROM secure_runs WHERE id = 1")).one()
        assert (row.state, bytes(row.total), row.version) == ('{"round": {"n": 3}}', total, 7)
    finally:
        database.dispose()
