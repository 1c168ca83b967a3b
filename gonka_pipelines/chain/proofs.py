"""Merkle inclusion proofs for any committed row, checked against the root in its block header."""

from __future__ import annotations

from typing import Any

from gonka_pipelines.chain.commitments import BY_NAME, epoch_rows, row_leaf
from gonka_pipelines.chain.record_roots import signed_proof
from gonka_pipelines.chain.store import FINALIZED, ChainError, ChainStore
from gonka_pipelines.protocol.merkle import build_proof, verify_proof


def _resolve_key(store: ChainStore, commitment: Any, given: str, epoch: int | None) -> str:
    """The row key `given` stands for: itself when a finalized row has it, an account's name (its address) when that
    is a key of the table, or the one key starting with it; an ambiguous prefix is an error naming some of its keys."""
    def keys_starting(prefix: str) -> list[str]:
        return [key for (key,) in store._query(
            f"""SELECT DISTINCT _key FROM (SELECT {commitment.epoch} AS epoch, CAST({commitment.key} AS VARCHAR) AS _key
                                           FROM {commitment.table})
                WHERE starts_with(_key, ?) AND (? IS NULL OR epoch = ?) AND epoch IN (SELECT height FROM blocks WHERE status = ?)
                ORDER BY _key LIMIT 3""", [prefix, epoch, epoch, FINALIZED])]

    keys = keys_starting(given)
    if given in keys:
        return given
    named = store._query("SELECT address FROM accounts WHERE name = ?", [given])
    if named and keys_starting(named[0][0])[:1] == [named[0][0]]:
        return named[0][0]
    if len(keys) > 1:
        shown = ", ".join(k[:16] + "…" for k in keys[:2]) + (", ..." if len(keys) > 2 else "")
        raise ChainError(f"{given!r} starts more than one key of {commitment.table} ({shown}); give more characters")
    return keys[0] if keys else given


def prove_row(store: ChainStore, table: str, row_id: str, epoch: int | None = None) -> dict[str, Any]:
    """Proof that the row `row_id` (its key, a unique prefix of it, or an account's name) of `table` is in a finalized
    block (the latest one holding it, unless epoch is given); a result or verdict (inference or training) also gets
    `signed`, its proof of inclusion in the root its executor or validator signed."""
    commitment = BY_NAME.get(table)
    if commitment is None:
        raise ChainError(f"unknown table {table!r}; provable tables: {', '.join(sorted(BY_NAME))}")
    row_id = _resolve_key(store, commitment, row_id, epoch)
    found = store._query(
        f"""SELECT max(epoch) FROM (SELECT {commitment.epoch} AS epoch, CAST({commitment.key} AS VARCHAR) AS _key
                                    FROM {commitment.table})
            WHERE _key = ? AND (? IS NULL OR epoch = ?) AND epoch IN (SELECT height FROM blocks WHERE status = ?)""",
        [row_id, epoch, epoch, FINALIZED])[0][0]
    if found is None:
        raise ChainError(f"no row {row_id!r} in {commitment.table} of a finalized block" + (f" at epoch {epoch}" if epoch is not None else ""))
    keyed = epoch_rows(store._connection, commitment, found)
    try:
        leaves = [row_leaf(commitment, row) for _, row in keyed]
    except ValueError as error:  # a value no canonical encoding holds (a NaN): no block committed to such a row
        raise ChainError(f"a {commitment.table} row of epoch {found} has no canonical encoding ({error}): it was changed "
                         "after its block (gonka verify-chain names it)") from error
    index = next(i for i, (key, _) in enumerate(keyed) if key == row_id)
    proof = build_proof(leaves, index)
    block = store.block(found)
    assert block is not None, "a finalized epoch has its block"
    root = block["header"]["roots"][commitment.name]
    signed = signed_proof(store._connection, commitment.table, store.chain_id, found, keyed[index][1])
    return {
        "table": commitment.table, "commitment": commitment.name, "id": row_id, "epoch": found,
        "row": keyed[index][1],
        "leaf": leaves[index], "proof": proof.as_dict(), "root": root, "block_hash": block["hash"],
        "verified": verify_proof(leaves[index], proof, root),
    } | ({"signed": signed} if signed is not None else {})
