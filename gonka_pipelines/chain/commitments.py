"""What a block commits to: per-epoch row sets, their canonical leaves, and their Merkle roots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from gonka_pipelines.protocol.crypto import canonical_row_bytes
from gonka_pipelines.protocol.merkle import leaf_digest, merkle_root_of_digests


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


def _ordered_rows(connection: duckdb.DuckDBPyConnection, commitment: Commitment, epoch: int) -> list[tuple]:
    """(commitment name, committed columns..., key) of one epoch's rows in key order; BLOB columns come as lowercase
    hex, so a row has one canonical encoding."""
    types = dict(connection.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
                                    [commitment.table]).fetchall())
    columns = ", ".join(f"lower(hex({c})) AS {c}" if types.get(c) == "BLOB" else c for c in commitment.columns)
    return connection.execute(
        f"SELECT ? AS commitment, {columns}, CAST({commitment.key} AS VARCHAR) AS _key FROM {commitment.table} "
        f"WHERE {commitment.epoch} = ? ORDER BY _key", [commitment.name, epoch]).fetchall()


def epoch_rows(connection: duckdb.DuckDBPyConnection, commitment: Commitment, epoch: int) -> list[tuple[str, dict[str, Any]]]:
    """(key, committed columns) of one epoch's rows in key order."""
    return [(values[-1], dict(zip(commitment.columns, values[1:]))) for values in _ordered_rows(connection, commitment, epoch)]


def epoch_roots(connection: duckdb.DuckDBPyConnection, epoch: int) -> dict[str, str]:
    """Merkle root of every commitment for the epoch: each row's leaf from one dict (zip stops before the key) and one
    orjson call; leaves and nodes stay bytes, hex only for the roots."""
    roots = {}
    for c in COMMITMENTS:
        names = ("commitment", *c.columns)
        roots[c.name] = merkle_root_of_digests([leaf_digest(canonical_row_bytes(dict(zip(names, values))))
                                                for values in _ordered_rows(connection, c, epoch)])
    return roots
