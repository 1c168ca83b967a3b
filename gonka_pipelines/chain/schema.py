"""The ledger's schema as an ordered list of migrations, applied at open and recorded in schema_version."""

from __future__ import annotations

import duckdb

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "chain core: accounts, hosts, epochs, intake, journal, post-state, blocks, lineage",
        """
        CREATE TABLE chain_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
        CREATE TABLE accounts (
            address VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, kind VARCHAR NOT NULL, public_key VARCHAR NOT NULL);
        CREATE TABLE hosts (
            address VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, public_key VARCHAR NOT NULL,
            capacity INTEGER NOT NULL, models VARCHAR[] NOT NULL, behaviour VARCHAR NOT NULL);
        CREATE TABLE epochs (
            epoch BIGINT PRIMARY KEY, status VARCHAR NOT NULL, seed VARCHAR NOT NULL,
            params_hash VARCHAR NOT NULL, params_json VARCHAR NOT NULL);
        CREATE TABLE submissions (
            submission_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, outcome VARCHAR NOT NULL);
        CREATE TABLE tasks (
            task_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, submission_id VARCHAR NOT NULL,
            developer VARCHAR NOT NULL, nonce BIGINT NOT NULL, model VARCHAR NOT NULL, prompt VARCHAR NOT NULL,
            prompt_tokens INTEGER NOT NULL, max_tokens INTEGER NOT NULL, max_price BIGINT NOT NULL,
            escrow BIGINT NOT NULL, signature VARCHAR NOT NULL, UNIQUE (developer, nonce));
        CREATE TABLE rejected_tasks (
            submission_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, reason VARCHAR NOT NULL,
            detail VARCHAR NOT NULL, raw_payload BLOB NOT NULL);
        CREATE TABLE transfers (
            transfer_id VARCHAR PRIMARY KEY, epoch BIGINT NOT NULL, stage VARCHAR NOT NULL, account VARCHAR NOT NULL,
            balance_delta BIGINT NOT NULL, escrow_delta BIGINT NOT NULL, kind VARCHAR NOT NULL, ref VARCHAR NOT NULL);
        CREATE TABLE account_states (
            epoch BIGINT NOT NULL, address VARCHAR NOT NULL, balance BIGINT NOT NULL, escrow BIGINT NOT NULL,
            collateral BIGINT NOT NULL, PRIMARY KEY (epoch, address));
        CREATE TABLE host_states (
            epoch BIGINT NOT NULL, address VARCHAR NOT NULL, weight BIGINT NOT NULL, status VARCHAR NOT NULL,
            PRIMARY KEY (epoch, address));
        CREATE TABLE blocks (
            height BIGINT PRIMARY KEY, hash VARCHAR NOT NULL, prev_hash VARCHAR NOT NULL, status VARCHAR NOT NULL,
            header_json VARCHAR NOT NULL);
        CREATE TABLE block_signatures (
            height BIGINT NOT NULL, signer VARCHAR NOT NULL, signature VARCHAR NOT NULL, weight BIGINT NOT NULL,
            PRIMARY KEY (height, signer));
        CREATE TABLE lineage (
            epoch BIGINT NOT NULL, child_kind VARCHAR NOT NULL, child_id VARCHAR NOT NULL,
            parent_kind VARCHAR NOT NULL, parent_id VARCHAR NOT NULL, relation VARCHAR NOT NULL);
        """,
    ),
]


def current_version(connection: duckdb.DuckDBPyConnection) -> int:
    """The highest migration applied; 0 for an empty database."""
    exists = connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'").fetchone()[0]
    if not exists:
        return 0
    return connection.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]


def migrate(connection: duckdb.DuckDBPyConnection, target: int | None = None) -> list[int]:
    """Apply every migration above the recorded version (up to target), each in its own transaction."""
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description VARCHAR NOT NULL)")
    applied = []
    for version, description, sql in MIGRATIONS:
        if version <= current_version(connection) or (target is not None and version > target):
            continue
        connection.execute("BEGIN TRANSACTION")
        try:
            connection.execute(sql)
            connection.execute("INSERT INTO schema_version VALUES (?, ?)", [version, description])
            connection.execute("COMMIT")
        except Exception:
            connection.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied
