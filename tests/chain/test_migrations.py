"""Schema migrations: ordered, recorded, transactional, applied on writable opens, refused on read-only ones."""

from __future__ import annotations

import duckdb
import pytest

from gonka_pipelines.chain import core as core_module
from gonka_pipelines.chain import schema
from gonka_pipelines.chain.schema import MIGRATIONS, current_version, migrate
from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.protocol.block import GENESIS_PREV_HASH

from support.chains import DEMO_EPOCHS

LATEST = MIGRATIONS[-1][0]


def tables(connection: duckdb.DuckDBPyConnection) -> set[str]:
    return {name for (name,) in connection.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def recorded(connection: duckdb.DuckDBPyConnection) -> list[tuple[int, str]]:
    return connection.execute("SELECT version, description FROM schema_version ORDER BY version").fetchall()


def test_migrations_are_numbered_one_up_without_gaps():
    assert [version for version, _, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1)) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert all(description.strip() and sql.strip() for _, description, sql in MIGRATIONS)


def columns(connection: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [name for (name,) in connection.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position", [table]).fetchall()]


def test_migration_4_drops_the_epoch_seed(tmp_path):
    """Up to version 3 every epoch row copied the previous block hash as its seed; version 4 keeps it only in blocks."""
    with duckdb.connect(str(tmp_path / "c.duckdb")) as connection:
        migrate(connection, target=3)
        assert columns(connection, "epochs") == ["epoch", "status", "seed", "params_hash", "params_json"]
        assert migrate(connection, target=4) == [4]
        assert columns(connection, "epochs") == ["epoch", "status", "params_hash", "params_json"]
        assert "prev_hash" in columns(connection, "blocks")


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
        assert current_version(store._connection) == LATEST
        assert [v for v, _ in recorded(store._connection)] == list(range(1, LATEST + 1))


def test_migrate_stops_at_target(tmp_path):
    with duckdb.connect(str(tmp_path / "c.duckdb")) as connection:
        assert migrate(connection, target=0) == []
        assert tables(connection) == {"schema_version"}
        assert migrate(connection, target=1) == [1]
        assert current_version(connection) == 1
        assert migrate(connection) == list(range(2, LATEST + 1))


def test_reopening_applies_nothing_and_data_survives(genesis_layout):
    with ChainStore.open(genesis_layout.database) as store:
        head = store.head()
        accounts = store._query("SELECT * FROM accounts ORDER BY address")
        assert recorded(store._connection) == [(v, d) for v, d, _ in MIGRATIONS]
    with ChainStore.open(genesis_layout.database) as store:
        assert migrate(store._connection) == []
        assert store.head() == head
        assert store._query("SELECT * FROM accounts ORDER BY address") == accounts
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


def test_read_only_open_of_a_current_database_works(genesis_layout):
    with ChainStore.open(genesis_layout.database, read_only=True) as store:
        assert store.head().height == 0
        with pytest.raises(duckdb.Error):
            store._connection.execute("DELETE FROM accounts")


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
    with ChainStore.open(demo_layout.database) as store:
        head = store.head()
        tasks = store._query("SELECT * FROM tasks ORDER BY task_id")
    upcoming = (LATEST + 1, "future: task labels", "ALTER TABLE tasks ADD COLUMN label VARCHAR DEFAULT 'none'; "
                                                   "CREATE TABLE future_table (x INTEGER);")
    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, upcoming])
    monkeypatch.setattr(core_module, "MIGRATIONS", schema.MIGRATIONS)
    with pytest.raises(ChainError, match=f"older than version {LATEST + 1}"):
        with ChainStore.open(demo_layout.database, read_only=True):
            pass
    with ChainStore.open(demo_layout.database) as store:
        assert current_version(store._connection) == LATEST + 1
        assert store.head() == head
        assert store._query("SELECT * EXCLUDE (label) FROM tasks ORDER BY task_id") == tasks
        assert store._query("SELECT DISTINCT label FROM tasks") == [("none",)]
        assert verify_chain(store).first_problem is None
    with ChainStore.open(demo_layout.database, read_only=True) as store:
        assert store.head() == head


DATA_TABLES = ("accounts", "hosts", "tasks", "rejected_tasks", "transfers", "account_states", "host_states", "blocks",
               "block_signatures", "poc_batches", "poc_verdicts", "task_results", "task_verdicts", "rewards", "lineage")
EXCLUDE = {"tasks": "EXCLUDE (version)"}
"""Columns a version-3 chain did not have (migration 8 adds them with their defaults)."""


def rewind_to_version_3(path) -> dict[int, str]:
    """Turn a current chain back into what version 3 stored: every epoch row holds its seed (GENESIS_PREV_HASH for
    epoch 0, the hash of block epoch - 1 after it), chain_meta copies the genesis parameters, supply and profile,
    emissions have no `unclaimed` column, PoC verdicts are one row per (validator, host) with signatures apart, results
    and task verdicts carry a signature each (no record_roots), and schema_version stops at 3. Returns the seeds by epoch."""
    with duckdb.connect(str(path)) as connection:
        connection.execute("ALTER TABLE epochs ADD COLUMN seed VARCHAR")
        connection.execute("""UPDATE epochs SET seed = coalesce((SELECT b.hash FROM blocks b WHERE b.height = epochs.epoch - 1), ?)""",
                           [GENESIS_PREV_HASH])
        connection.execute("ALTER TABLE epochs ALTER COLUMN seed SET NOT NULL")
        connection.execute("""INSERT INTO chain_meta SELECT 'genesis_params', params_json FROM epochs WHERE epoch = 0
                              UNION ALL SELECT 'genesis_supply', CAST(sum(balance + collateral) AS VARCHAR)
                                        FROM account_states WHERE epoch = 0
                              UNION ALL SELECT 'profile', json_extract_string(params_json, 'profile') FROM epochs WHERE epoch = 0""")
        connection.execute("ALTER TABLE emissions DROP COLUMN unclaimed")
        for table in ("corpus_shards", "training_tasks", "model_versions", "training_results", "training_verdicts",
                      "served_versions"):
            connection.execute(f"DROP TABLE {table}")
        connection.execute("ALTER TABLE tasks DROP COLUMN version")
        connection.execute("ALTER TABLE epoch_weights DROP COLUMN vote_weight")
        connection.execute("DROP VIEW poc_verdicts")
        connection.execute("CREATE TABLE poc_verdicts AS SELECT * FROM (SELECT epoch, validator, unnest(hosts) AS host, "
                           "unnest(sampled) AS sampled, unnest(mismatches) AS mismatches, unnest(recomputed) AS recomputed, "
                           "unnest(valid) AS valid FROM poc_verdict_sets)")
        connection.execute("CREATE TABLE poc_verdict_signatures AS SELECT epoch, validator, signature FROM poc_verdict_sets")
        connection.execute("DROP TABLE poc_verdict_sets")
        connection.execute("DROP TABLE record_roots")
        for table in ("task_results", "task_verdicts"):
            connection.execute(f"ALTER TABLE {table} ADD COLUMN signature VARCHAR DEFAULT ''")
        connection.execute("DELETE FROM schema_version WHERE version >= 4")
        assert current_version(connection) == 3
        return dict(connection.execute("SELECT epoch, seed FROM epochs ORDER BY epoch").fetchall())


def test_a_version_3_chain_upgrades_with_its_data(demo_layout):
    """A chain written at version 3 (epochs carry the seed, chain_meta copies of the genesis rows, no unclaimed payouts)
    is refused read-only, then upgraded in place on a writable open: the seed column and the copies go, every other row
    stays, the previous block hash is read from the blocks, emissions gain `unclaimed` at 0 and the training tables
    appear empty. A version-3 chain was sealed under other rules (refusals burned at once, no corpus or model versions
    at genesis): the schema upgrades, and verify-chain says which root no longer matches (re-create such a chain)."""
    with ChainStore.open(demo_layout.database) as store:
        head = store.head()
        assert head.height == DEMO_EPOCHS
        rows = {table: store._query(f"SELECT * {EXCLUDE.get(table, '')} FROM {table} ORDER BY ALL") for table in DATA_TABLES}
        emissions = store._query("SELECT epoch, scheduled, minted, burned FROM emissions ORDER BY epoch")
        epochs = store._query("SELECT epoch, status, params_hash, params_json FROM epochs ORDER BY epoch")
    seeds = rewind_to_version_3(demo_layout.database)
    assert seeds[0] == GENESIS_PREV_HASH and len(seeds) == DEMO_EPOCHS + 1
    with pytest.raises(ChainError, match=f"schema is older than version {LATEST}; open it writable once to migrate"):
        with ChainStore.open(demo_layout.database, read_only=True):
            pass
    with ChainStore.open(demo_layout.database) as store:
        assert current_version(store._connection) == LATEST == 11
        assert [v for v, _ in recorded(store._connection)] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
        assert store._query("SELECT key FROM chain_meta") == [("chain_id",)]
        assert columns(store._connection, "epochs") == ["epoch", "status", "params_hash", "params_json"]
        assert store.head() == head
        assert {table: store._query(f"SELECT * {EXCLUDE.get(table, '')} FROM {table} ORDER BY ALL") for table in DATA_TABLES} == rows
        assert store._query("SELECT DISTINCT version FROM tasks") == [("",)], "version 3 tasks named no model version"
        assert store._query("SELECT epoch, status, params_hash, params_json FROM epochs ORDER BY epoch") == epochs
        assert {epoch: store.prev_hash(epoch) for epoch in range(1, DEMO_EPOCHS + 1)} == {
            epoch: seed for epoch, seed in seeds.items() if epoch > 0}
        assert store._query("SELECT epoch, scheduled, minted, burned FROM emissions ORDER BY epoch") == emissions
        assert store._query("SELECT DISTINCT unclaimed FROM emissions") == [(0,)]
        assert store._scalar("SELECT count(*) FROM model_versions") == 0, "a version-3 chain registered no training"
        report = verify_chain(store)
        assert report.first_problem is not None and report.first_problem.height == 0
        assert "the corpus_shards root in the header" in report.first_problem.message


UNKEYED = ("transfers", "tasks", "task_results", "task_verdicts", "task_outcomes", "fee_shares", "training_results",
           "training_verdicts")
"""The epoch's record tables that migration 11 rebuilds without their PRIMARY KEY."""


def constraints(connection: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, list[str]]]:
    return [(kind, names) for kind, names in connection.execute(
        "SELECT constraint_type, constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
        "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE') ORDER BY ALL", [table]).fetchall()]


def test_migration_11_drops_the_record_tables_keys_and_keeps_every_row(demo_layout):
    """A version-10 chain (the record tables keyed) migrates in place: the same rows in the same column order, no PRIMARY
    KEY on the epoch's records, tasks keep UNIQUE (developer, nonce) and submissions their key, the chain verifies."""
    with ChainStore.open(demo_layout.database) as store:
        rows = {table: store._query(f"SELECT * FROM {table} ORDER BY ALL") for table in UNKEYED}
        layout = {table: columns(store._connection, table) for table in UNKEYED}
        assert all(rows[table] for table in ("transfers", "tasks", "task_results", "task_verdicts", "fee_shares"))
    with duckdb.connect(str(demo_layout.database)) as connection:  # back to version 10: each table with its old key
        for table, key in {"transfers": "transfer_id", "tasks": "task_id", "task_results": "task_id",
                           "task_verdicts": "task_id, validator", "task_outcomes": "task_id", "fee_shares": "task_id, host",
                           "training_results": "task_id", "training_verdicts": "task_id, validator"}.items():
            definition = connection.execute("SELECT sql FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone()[0]
            keyed = definition.replace(f"CREATE TABLE {table}(", f"CREATE TABLE {table}_keyed(").replace(");", f", PRIMARY KEY ({key}));")
            connection.execute(keyed)
            connection.execute(f"INSERT INTO {table}_keyed SELECT * FROM {table}; DROP TABLE {table}; "
                               f"ALTER TABLE {table}_keyed RENAME TO {table}")
            assert ("PRIMARY KEY", [name.strip() for name in key.split(",")]) in constraints(connection, table)
        connection.execute("DELETE FROM schema_version WHERE version = 11")
    with ChainStore.open(demo_layout.database) as store:
        connection = store._connection
        assert current_version(connection) == 11
        assert {table: store._query(f"SELECT * FROM {table} ORDER BY ALL") for table in UNKEYED} == rows
        assert {table: columns(connection, table) for table in UNKEYED} == layout
        assert {table: constraints(connection, table) for table in UNKEYED} == {
            table: ([("UNIQUE", ["developer", "nonce"])] if table == "tasks" else []) for table in UNKEYED}
        assert constraints(connection, "submissions") == [("PRIMARY KEY", ["submission_id"])]
        assert verify_chain(store).first_problem is None
        with pytest.raises(duckdb.ConstraintException):  # replay protection: a developer's nonce is taken once
            store._execute("INSERT INTO tasks SELECT * FROM tasks LIMIT 1")
