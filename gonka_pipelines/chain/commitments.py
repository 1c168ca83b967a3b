"""What a block commits to: per-epoch row sets, their canonical leaves, and their Merkle roots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from gonka_pipelines.protocol.crypto import canonical_bytes
from gonka_pipelines.protocol.merkle import leaf_hash, merkle_root


@dataclass(frozen=True)
class Commitment:
    """One header root: the rows of `table` in an epoch, identified and ordered by `key`."""

    name: str
    table: str
    key: str
    columns: tuple[str, ...]


COMMITMENTS: tuple[Commitment, ...] = (
    Commitment("tasks", "tasks", "task_id", (
        "task_id", "submission_id", "developer", "nonce", "model", "prompt", "prompt_tokens",
        "max_tokens", "max_price", "escrow", "signature")),
    Commitment("rejections", "rejected_tasks", "submission_id", ("submission_id", "reason", "detail", "raw_payload")),
    Commitment("transfers", "transfers", "transfer_id", (
        "transfer_id", "stage", "account", "balance_delta", "escrow_delta", "locked_delta", "collateral_delta", "kind", "ref")),
    Commitment("accounts", "account_states", "address", ("address", "balance", "escrow", "locked", "collateral")),
    Commitment("hosts", "host_states", "address", (
        "address", "weight", "status", "reputation", "epochs_served", "consecutive_invalidations")),
)
BY_NAME = {c.name: c for c in COMMITMENTS} | {c.table: c for c in COMMITMENTS}


def _jsonable(value: Any) -> Any:
    """Bytes become hex so a row has one canonical encoding."""
    return value.hex() if isinstance(value, (bytes, bytearray, memoryview)) else value


def row_leaf(commitment: Commitment, row: dict[str, Any]) -> str:
    """Leaf hash of one row: its committed columns, tagged with the commitment name."""
    return leaf_hash(canonical_bytes({"commitment": commitment.name, **{c: _jsonable(row[c]) for c in commitment.columns}}))


def epoch_rows(connection: duckdb.DuckDBPyConnection, commitment: Commitment, epoch: int) -> list[dict[str, Any]]:
    """The committed rows of one epoch in key order."""
    columns = ", ".join(commitment.columns)
    cursor = connection.execute(
        f"SELECT {columns} FROM {commitment.table} WHERE epoch = ? ORDER BY {commitment.key}", [epoch]
    )
    return [dict(zip(commitment.columns, values)) for values in cursor.fetchall()]


def epoch_leaves(connection: duckdb.DuckDBPyConnection, commitment: Commitment, epoch: int) -> list[tuple[Any, str]]:
    """(key, leaf hash) for every committed row of the epoch, in key order."""
    return [(row[commitment.key], row_leaf(commitment, row)) for row in epoch_rows(connection, commitment, epoch)]


def epoch_roots(connection: duckdb.DuckDBPyConnection, epoch: int) -> dict[str, str]:
    """Merkle root of every commitment for the epoch."""
    return {c.name: merkle_root([leaf for _, leaf in epoch_leaves(connection, c, epoch)]) for c in COMMITMENTS}
