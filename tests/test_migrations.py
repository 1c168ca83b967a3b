"""Schema migrations: ordered, recorded, transactional, applied on writable opens, refused on read-only ones."""

from __future__ import annotations

import duckdb
import pytest

from gonka_pipelines.chain import schema
from gonka_pipelines.chain import store as store_module
from gonka_pipelines.chain.schema import MIGRATIONS, current_version, migrate
from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.chain.verify import verify_chain

LATEST = MIGRATIONS[-1][0]


def tables(connection: duckdb.DuckDBPyConnection) -> set[str]:
    return {name for (name,) in connection.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def recorded(connection: duckdb.DuckDBPyConnection) -> list[tuple[int, str]]:
    return connection.execute("SELECT version, description FROM schema_version ORDER BY version").fetchall()


def test_migrations_are_numbered_one_up_without_gaps():
    assert [version for version, _, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(description.strip() and sql.strip() for _, description, sql in MIGRATIONS)


def test_empty_database_is_version_zero(tmp_path):
    with duckdb.connect(str(tmp_path / "c.duckdb")) as connection:
        assert current_version(connection) == 0


def test_empty_database_migrates_to_latest(tmp_path):
    with duckdb.connect(str(tmp_path / "c.duckdb")) as connection:
        assert migrate(connection) == [v for v, _, _ in MIGRATIONS]
        assert current_version(connection) == LATEST
        assert recorded(connection) == [(v, d) for v, d, _ in MIGRATIONS]
        assert {"chain_meta", "accounts", "hosts", "epochs", "submissions", "tasks", "rejected_tasks", "transfers",
                "account_states", "host_states", "blocks", "block_signatures", "lineage"} <= tables(connection)
        assert migrate(connection) == []  # idempotent
        assert recorded(connection) == [(v, d) for v, d, _ in MIGRATIONS]


@pytest.mark.parametrize("start", range(0, LATEST))
def test_a_database_at_an_older_version_migrates_on_open(tmp_path, start):
    path = tmp_path / "c.duckdb"
    with duckdb.connect(str(path)) as connection:
        migrate(connection, target=start)
        assert current_version(connection) == start
    with ChainStore.open(path) as store:
        assert current_version(store.connection) == LATEST
        assert [v for v, _ in recorded(store.connection)] == list(range(1, LATEST + 1))


def test_migrate_stops_at_target(tmp_path):
    with duckdb.connect(str(tmp_path / "c.duckdb")) as connection:
        assert migrate(connection, target=0) == []
        assert tables(connection) == {"schema_version"}
        assert migrate(connection, target=1) == [1]
        assert current_version(connection) == 1
        assert migrate(connection) == list(range(2, LATEST + 1))


def test_reopening_applies_nothing_and_data_survives(initialized_layout):
    with ChainStore.open(initialized_layout.database) as store:
        head = store.head()
        accounts = store.query("SELECT * FROM accounts ORDER BY address")
        assert recorded(store.connection) == [(v, d) for v, d, _ in MIGRATIONS]
    with ChainStore.open(initialized_layout.database) as store:
        assert migrate(store.connection) == []
        assert store.head() == head
        assert store.query("SELECT * FROM accounts ORDER BY address") == accounts
        assert verify_chain(store).first_problem is None


def test_read_only_open_of_an_outdated_database_refuses(tmp_path):
    path = tmp_path / "c.duckdb"
    with duckdb.connect(str(path)) as connection:
        migrate(connection, target=LATEST - 1)
    with pytest.raises(ChainError) as error:
        with ChainStore.open(path, read_only=True):
            pass
    assert str(error.value) == f"{path}: schema is older than version {LATEST}; open it writable once to migrate"
    with duckdb.connect(str(path)) as connection:  # the refusal changed nothing
        assert current_version(connection) == LATEST - 1


def test_read_only_open_of_a_missing_database_refuses(tmp_path):
    with pytest.raises(ChainError, match="no chain here yet; run `gonka init`"):
        with ChainStore.open(tmp_path / "none.duckdb", read_only=True):
            pass
    assert not (tmp_path / "none.duckdb").exists()


def test_read_only_open_of_a_current_database_works(initialized_layout):
    with ChainStore.open(initialized_layout.database, read_only=True) as store:
        assert store.head().height == 0
        with pytest.raises(duckdb.Error):
            store.connection.execute("DELETE FROM accounts")


def test_a_failing_migration_rolls_back_entirely(tmp_path, monkeypatch):
    broken = (LATEST + 1, "broken", "CREATE TABLE half_done (a INTEGER); SELECT * FROM no_such_table;")
    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, broken])
    with duckdb.connect(str(tmp_path / "c.duckdb")) as connection:
        with pytest.raises(duckdb.Error):
            migrate(connection)
        assert current_version(connection) == LATEST
        assert "half_done" not in tables(connection)


def test_a_future_migration_upgrades_a_chain_with_data(demo_layout, monkeypatch):
    """Simulate the next migration landing: an existing chain is refused read-only, then upgraded in place, data intact."""
    initialized_layout = demo_layout
    with ChainStore.open(initialized_layout.database) as store:
        head = store.head()
        tasks = store.query("SELECT * FROM tasks ORDER BY task_id")
    upcoming = (LATEST + 1, "future: task labels", "ALTER TABLE tasks ADD COLUMN label VARCHAR DEFAULT 'none'; "
                                                   "CREATE TABLE future_table (x INTEGER);")
    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, upcoming])
    monkeypatch.setattr(store_module, "MIGRATIONS", schema.MIGRATIONS)
    with pytest.raises(ChainError, match=f"older than version {LATEST + 1}"):
        with ChainStore.open(initialized_layout.database, read_only=True):
            pass
    with ChainStore.open(initialized_layout.database) as store:
        assert current_version(store.connection) == LATEST + 1
        assert store.head() == head
        assert store.query("SELECT * EXCLUDE (label) FROM tasks ORDER BY task_id") == tasks
        assert store.query("SELECT DISTINCT label FROM tasks") == [("none",)]
        assert verify_chain(store).first_problem is None
    with ChainStore.open(initialized_layout.database, read_only=True) as store:
        assert store.head() == head
