"""Merkle inclusion proofs for any committed row, checked against the root in its block header."""

from __future__ import annotations

from typing import Any

from gonka_pipelines.chain.commitments import BY_NAME, epoch_rows, row_leaf
from gonka_pipelines.chain.store import FINALIZED, ChainError, ChainStore
from gonka_pipelines.protocol.merkle import build_proof, verify_proof


def prove_row(store: ChainStore, table: str, row_id: str, epoch: int | None = None) -> dict[str, Any]:
    """Proof that the row `row_id` of `table` is in a finalized block (the latest one holding it, unless epoch is given)."""
    commitment = BY_NAME.get(table)
    if commitment is None:
        raise ChainError(f"unknown table {table!r}; provable tables: {', '.join(sorted(BY_NAME))}")
    found = store._query(
        f"""SELECT max(epoch) FROM (SELECT {commitment.epoch} AS epoch, CAST({commitment.key} AS VARCHAR) AS _key
                                    FROM {commitment.table})
            WHERE _key = ? AND (? IS NULL OR epoch = ?) AND epoch IN (SELECT height FROM blocks WHERE status = ?)""",
        [row_id, epoch, epoch, FINALIZED])[0][0]
    if found is None:
        raise ChainError(f"no row {row_id!r} in {commitment.table} of a finalized block" + (f" at epoch {epoch}" if epoch is not None else ""))
    keyed = epoch_rows(store._connection, commitment, found)
    leaves = [row_leaf(commitment, row) for _, row in keyed]
    index = next(i for i, (key, _) in enumerate(keyed) if key == row_id)
    proof = build_proof(leaves, index)
    block = store.block(found)
    assert block is not None, "a finalized epoch has its block"
    root = block["header"]["roots"][commitment.name]
    return {
        "table": commitment.table, "commitment": commitment.name, "id": row_id, "epoch": found,
        "row": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in keyed[index][1].items()},
        "leaf": leaves[index], "proof": proof.as_dict(), "root": root, "block_hash": block["hash"],
        "verified": verify_proof(leaves[index], proof, root),
    }
