"""What a block commits to: per-epoch row sets, their canonical leaves, and their Merkle roots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from gonka_pipelines.protocol.crypto import canonical_bytes, canonical_row_bytes
from gonka_pipelines.protocol.merkle import LEAF_PREFIX, leaf_digest, merkle_root_of_digests


@dataclass(frozen=True)
class Commitment:
    """One header root: the rows of `table` in an epoch, identified and ordered by the SQL expression `key`.

    `epoch` is the SQL expression giving a row's epoch; the registries use the constant 0, so the genesis
    block commits to every account and host key and later blocks to none.
    """

    name: str
    table: str
    key: str
    columns: tuple[str, ...]
    epoch: str = "epoch"


COMMITMENTS: tuple[Commitment, ...] = (
    Commitment("registry_accounts", "accounts", "address", ("address", "name", "kind", "public_key"), epoch="0"),
    Commitment("registry_hosts", "hosts", "address", ("address", "name", "public_key", "capacity", "models", "behaviour"),
               epoch="0"),
    Commitment("corpus_shards", "corpus_shards", "hash", ("hash", "name", "role", "bytes"), epoch="0"),
    Commitment("submissions", "submissions", "submission_id", ("submission_id", "outcome")),
    Commitment("tasks", "tasks", "task_id", (
        "task_id", "submission_id", "developer", "nonce", "model", "prompt", "prompt_tokens",
        "max_tokens", "max_price", "escrow", "signature", "version")),
    Commitment("training_tasks", "training_tasks", "task_id", (
        "task_id", "submission_id", "developer", "nonce", "model", "base_version", "shards", "steps", "batch_size",
        "learning_rate", "seed", "max_price", "tokens", "escrow", "signature")),
    Commitment("training_results", "training_results", "task_id", (
        "task_id", "executor", "status", "version", "checkpoint_steps", "checkpoints", "losses", "tokens", "cost", "refund",
        "signature")),
    Commitment("training_verdicts", "training_verdicts", "task_id || ':' || validator", (
        "task_id", "validator", "first_step", "last_step", "recomputed", "passed", "eval_loss", "reason", "signature")),
    Commitment("model_versions", "model_versions", "version", (
        "version", "model", "parent", "task_id", "executor", "shards", "final_loss", "eval_loss")),
    Commitment("served_versions", "served_versions", "model", ("model", "version")),
    Commitment("rejections", "rejected_tasks", "submission_id", ("submission_id", "reason", "detail", "raw_payload")),
    Commitment("transfers", "transfers", "transfer_id", (
        "transfer_id", "stage", "account", "balance_delta", "escrow_delta", "locked_delta", "collateral_delta", "kind", "ref")),
    Commitment("batches", "poc_batches", "batch_id", (
        "batch_id", "host", "sequence", "nonces", "distances", "submitted_at", "signature", "status", "reason")),
    Commitment("poc_verdicts", "poc_verdict_sets", "validator", (
        "validator", "hosts", "sampled", "mismatches", "recomputed", "valid", "signature")),
    Commitment("weights", "epoch_weights", "address", (
        "address", "hits", "valid_vote_weight", "vote_weight", "sprint_accepted", "adjusted_weight", "weight")),
    Commitment("seeds", "seed_commitments", "host", ("host", "commitment", "signature")),
    Commitment("results", "task_results", "task_id", (
        "task_id", "executor", "status", "output_tokens", "top_ids", "top_logprobs", "completion_tokens", "cost",
        "refund", "signature")),
    Commitment("task_verdicts", "task_verdicts", "task_id || ':' || validator", (
        "task_id", "validator", "recomputed", "similarity", "passed", "reason", "signature")),
    Commitment("task_outcomes", "task_outcomes", "task_id", (
        "task_id", "executor", "validations", "failures", "invalid_vote_weight", "outcome")),
    Commitment("fee_shares", "fee_shares", "task_id || ':' || host", ("task_id", "host", "role", "amount")),
    Commitment("host_epochs", "host_epochs", "address", (
        "address", "assigned", "missed", "validated", "invalidated", "consecutive_invalidations",
        "required_validations", "done_validations", "contradicted_votes", "status", "reputation", "epochs_served")),
    Commitment("rewards", "rewards", "address", (
        "address", "status", "weight", "total_weight", "reward", "work_coins", "withheld", "slashed", "claimed", "payout")),
    Commitment("emissions", "emissions", "CAST(epoch AS VARCHAR)", ("scheduled", "minted", "burned", "unclaimed")),
    Commitment("vesting", "vesting", "address || ':' || unlock_epoch", ("address", "unlock_epoch", "amount")),
    Commitment("lineage", "lineage", "concat_ws(':', child_kind, child_id, parent_kind, parent_id, relation)", (
        "child_kind", "child_id", "parent_kind", "parent_id", "relation")),
    Commitment("accounts", "account_states", "address", ("address", "balance", "escrow", "locked", "collateral")),
    Commitment("hosts", "host_states", "address", (
        "address", "weight", "status", "reputation", "epochs_served", "consecutive_invalidations")),
)
BY_NAME = {c.table: c for c in COMMITMENTS} | {c.name: c for c in COMMITMENTS}
"""Commitments by header-root name, or by table name where no root bears that name."""


def row_leaf(commitment: Commitment, row: dict[str, Any]) -> str:
    """Leaf hash of one row (as epoch_rows gives it): its committed columns, tagged with the commitment name."""
    return leaf_digest(canonical_row_bytes({"commitment": commitment.name, **{c: row[c] for c in commitment.columns}})).hex()


def _column_types(connection: duckdb.DuckDBPyConnection, commitment: Commitment) -> dict[str, str]:
    return dict(connection.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
                                   [commitment.table]).fetchall())


def _committed_values(commitment: Commitment, types: dict[str, str]) -> list[str]:
    """SQL for each committed column's value as the leaf holds it: BLOB columns as lowercase hex, so a row has one
    canonical encoding."""
    return [f"lower(hex({c}))" if types.get(c) == "BLOB" else c for c in commitment.columns]


def _ordered_rows(connection: duckdb.DuckDBPyConnection, commitment: Commitment, epoch: int) -> list[tuple]:
    """(commitment name, committed columns..., key) of one epoch's rows in key order."""
    values = _committed_values(commitment, _column_types(connection, commitment))
    columns = ", ".join(f"{v} AS {c}" for c, v in zip(commitment.columns, values))
    return connection.execute(
        f"SELECT ? AS commitment, {columns}, CAST({commitment.key} AS VARCHAR) AS _key FROM {commitment.table} "
        f"WHERE {commitment.epoch} = ? ORDER BY _key", [commitment.name, epoch]).fetchall()


_ESCAPED_CONTROL = "\\u00"
"""How DuckDB's JSON writer starts a control character's escape, in hex digits of its own case (\\u000B where
Python's json writes \\u000b): text holding one (or these characters themselves) is encoded in Python."""


def _written_apart(value: str, data_type: str, depth: int = 0) -> str:
    """SQL that is true when DuckDB's to_json may write this value otherwise than canonical_bytes: a float outside
    [1e-4, 1e16) (its exponent form differs from Python's repr; NaN and infinities too). Lists are checked element by
    element; integers, booleans, text (checked on the whole row's JSON) and hexed BLOBs are written alike."""
    if data_type.endswith("[]"):
        element = f"x{depth}"
        inner = _written_apart(element, data_type[:-2], depth + 1)
        return "false" if inner == "false" else f"coalesce(list_bool_or(list_transform({value}, lambda {element}: {inner})), false)"
    if data_type == "DOUBLE":
        return f"coalesce(NOT ({value} = 0 OR (abs({value}) >= 1e-4 AND abs({value}) < 1e16)), false)"
    if data_type in ("BIGINT", "INTEGER", "BOOLEAN", "BLOB", "VARCHAR"):
        return "false"
    raise ValueError(f"no SQL leaf encoding for a committed column of type {data_type}")


def leaf_digests(connection: duckdb.DuckDBPyConnection, commitment: Commitment, epoch: int) -> list[bytes]:
    """Each of the epoch's rows' leaf digest in key order, computed in DuckDB (JSON with sorted keys, SHA-256, on every
    core): byte for byte the leaf of canonical_bytes. Rows DuckDB might write otherwise are encoded in Python."""
    types = _column_types(connection, commitment)
    values = dict(zip(commitment.columns, _committed_values(commitment, types)))
    tagged = {"commitment": "?", **values}  # as in row_leaf: a column named commitment replaces the tag
    fields = ", ".join(f"'{name}': {tagged[name]}" for name in sorted(tagged))
    floats = " OR ".join(_written_apart(c, types[c]) for c in commitment.columns)
    apart = f"contains(_leaf_text, '{_ESCAPED_CONTROL}') OR {floats}"
    source = (f"SELECT CAST({commitment.key} AS VARCHAR) AS _key, to_json({{{fields}}})::VARCHAR AS _leaf_text, * "
              f"FROM {commitment.table} WHERE {commitment.epoch} = ?")
    tag = [] if "commitment" in values else [commitment.name]
    table = connection.sql(
        f"WITH leaves AS ({source}) SELECT CASE WHEN {apart} THEN NULL ELSE unhex(sha256(? || encode(_leaf_text))) END AS digest "
        "FROM leaves ORDER BY _key", params=[*tag, epoch, LEAF_PREFIX]).to_arrow_table()
    digests = table.column("digest").to_pylist()
    odd = [index for index, digest in enumerate(digests) if digest is None]
    if odd:  # the same rows in the same key order, their values read into Python
        rows = connection.execute(
            f"WITH leaves AS ({source}) SELECT {', '.join(f'{v} AS {c}' for c, v in values.items())} FROM leaves "
            f"WHERE {apart} ORDER BY _key", [*tag, epoch]).fetchall()
        for index, row in zip(odd, rows, strict=True):
            digests[index] = leaf_digest(canonical_bytes({"commitment": commitment.name, **dict(zip(commitment.columns, row))}))
    return digests


def epoch_rows(connection: duckdb.DuckDBPyConnection, commitment: Commitment, epoch: int) -> list[tuple[str, dict[str, Any]]]:
    """(key, committed columns) of one epoch's rows in key order."""
    return [(values[-1], dict(zip(commitment.columns, values[1:]))) for values in _ordered_rows(connection, commitment, epoch)]


def epoch_roots(connection: duckdb.DuckDBPyConnection, epoch: int) -> dict[str, str]:
    """Merkle root of every commitment for the epoch over its leaf digests; nodes stay bytes, hex only for the roots."""
    return {c.name: merkle_root_of_digests(leaf_digests(connection, c, epoch)) for c in COMMITMENTS}
