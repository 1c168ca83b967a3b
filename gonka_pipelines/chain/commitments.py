"""What a block commits to: per-epoch row sets, their canonical leaves, and their Merkle roots."""

from __future__ import annotations

from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gonka_pipelines.chain.hashing import NonFiniteFloat, digests_in_order, json_digests, string_buffers
from gonka_pipelines.protocol.crypto import canonical_row_bytes
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
        "task_id", "executor", "status", "version", "checkpoint_steps", "checkpoints", "losses", "tokens", "cost", "refund")),
    Commitment("training_verdicts", "training_verdicts", "task_id || ':' || validator", (
        "task_id", "validator", "first_step", "last_step", "recomputed", "passed", "eval_loss", "reason")),
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
        "refund")),
    Commitment("task_verdicts", "task_verdicts", "task_id || ':' || validator", (
        "task_id", "validator", "recomputed", "similarity", "passed", "reason")),
    Commitment("record_roots", "record_roots", "kind || ':' || signer", ("signer", "kind", "root", "records", "signature")),
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


def _commitment_leaf(values: dict[str, Any]) -> bytes:
    """Leaf digest of a row's committed values tagged with its commitment's name."""
    return leaf_digest(canonical_row_bytes(values))


def row_leaf(commitment: Commitment, row: dict[str, Any]) -> str:
    """Leaf hash of one row (as epoch_rows gives it): its committed columns, tagged with the commitment name."""
    return _commitment_leaf({"commitment": commitment.name, **{c: row[c] for c in commitment.columns}}).hex()


def column_types(connection: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """Every table's columns and their SQL types (one read of information_schema)."""
    types: dict[str, dict[str, str]] = {}
    for table, column, data_type in connection.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns").fetchall():
        types.setdefault(table, {})[column] = data_type
    return types


def _committed_values(commitment: Commitment, types: dict[str, str]) -> dict[str, str]:
    """Committed column -> SQL of its value as the leaf holds it: BLOB columns as lowercase hex, so a row has one
    canonical encoding."""
    return {c: f"lower(hex({c}))" if types.get(c) == "BLOB" else c for c in commitment.columns}


def _select_list(values: dict[str, str]) -> str:
    """`sql AS "name", ...` of a name -> SQL mapping."""
    return ", ".join(f'{sql} AS "{name}"' for name, sql in values.items())


def _ordered_rows(connection: duckdb.DuckDBPyConnection, commitment: Commitment, epoch: int) -> list[tuple]:
    """(commitment name, committed columns..., key) of one epoch's rows in key order."""
    values = _committed_values(commitment, column_types(connection).get(commitment.table, {}))
    return connection.execute(
        f"SELECT ? AS commitment, {_select_list(values)}, CAST({commitment.key} AS VARCHAR) AS _key FROM {commitment.table} "
        f"WHERE {commitment.epoch} = ? ORDER BY _key", [commitment.name, epoch]).fetchall()


@dataclass(frozen=True)
class JsonLeaves:
    """Rows whose leaves are SHA-256(prefix || canonical JSON object of `fields`), in `order`.

    `fields` maps each JSON key to the SQL of its value; `where` and `params` select the rows of `table`; `order` holds
    the SQL expressions the leaves are sorted by (unique together).
    """

    table: str
    fields: dict[str, str]
    where: str
    params: list[Any]
    order: tuple[str, ...]
    prefix: bytes


class UnencodableRow(ValueError):
    """A row whose leaf cannot be made: a value canonical_bytes refuses (a non-finite float), which only a row changed
    after its block was proposed can hold."""


LEAF_BATCH_ROWS = 131_072
"""Rows held at once while hashing leaves (their columns stream from DuckDB a batch at a time)."""


def json_leaf_buffer(connection: duckdb.DuckDBPyConnection, leaves: JsonLeaves) -> bytes:
    """Each row's leaf digest in order, end to end: DuckDB streams the fields as Arrow columns, C writes each row's
    canonical JSON from their buffers and hashes it (hashing.json_digests: byte for byte canonical_bytes, on every
    core, no Python object a row), and the digests are put in order (streamed_leaves)."""
    names = list(leaves.fields)
    keys = [f"_order{i}" for i in range(len(leaves.order))]
    values = [f"_value{i}" for i in range(len(names))]
    relation = connection.sql(
        f"SELECT {', '.join(f'{sql} AS {key}' for sql, key in zip(leaves.order, keys))}, "
        f"{', '.join(f'{leaves.fields[name]} AS {value}' for name, value in zip(names, values))} "
        f"FROM {leaves.table} WHERE {leaves.where}", params=leaves.params)

    def digests_of(batch: pa.RecordBatch) -> bytes:
        try:
            return json_digests(leaves.prefix, batch.select(values), names)
        except NonFiniteFloat as error:  # a value no canonical encoding holds (a NaN): no block can commit to the row
            raise UnencodableRow(f"a {leaves.table} row has no canonical encoding ({error})") from error

    return streamed_leaves(relation, keys, digests_of)


def streamed_leaves(relation: duckdb.DuckDBPyRelation, keys: list[str], digests_of: Callable[[pa.RecordBatch], bytes]) -> bytes:
    """Each row's leaf digest in the order of its `keys` columns, end to end: the rows stream from DuckDB a batch at a
    time, `digests_of` hashes each batch, and the digests (not the rows) are sorted by the keys, so the rows are never
    sorted or held all at once."""
    digests, order_batches = [], []
    with relation.to_arrow_reader(batch_size=LEAF_BATCH_ROWS) as reader:
        for batch in reader:
            if batch.num_rows:
                digests.append(digests_of(batch))
                order_batches.append(batch.select(keys))
    if not digests:
        return b""
    return digests_in_order(digests, sorted_positions(pa.Table.from_batches(order_batches), keys)).tobytes()


def sorted_positions(table: pa.Table, keys: list[str]) -> np.ndarray:
    """Row positions of `table` in the order of its `keys` columns (text bytewise, as DuckDB's default collation):
    one text key ranked by its first 8 bytes where that mostly settles the order (_text_order), else Arrow's sort."""
    column = table.column(keys[0])
    if len(keys) == 1 and not column.null_count and pa.types.is_integer(column.type):
        values = column.to_numpy()
        if (values[1:] >= values[:-1]).all():  # already in order (record leaves by position): the stable sort's answer
            return np.arange(len(values))
    ranked = (_text_order(column) if len(keys) == 1 and table.num_rows and not column.null_count
              and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) else None)
    return ranked if ranked is not None else pc.sort_indices(table, sort_keys=[(key, "ascending") for key in keys]).to_numpy()


TIE_SAMPLE_ROWS = 4096
"""Rows whose first 8 bytes tell whether a key column mostly ties there (a lineage or fee share key: kinds, or a task
id shared by several rows) and is better sorted as text at once."""


def _text_order(column: pa.ChunkedArray) -> np.ndarray | None:
    """Row positions of a text column in bytewise order: ranked by each text's first 8 bytes as an integer, and only
    the rows that tie there sorted as text (hash ids rarely tie: about half of Arrow's text sort at a million rows),
    equal texts in row order as a stable sort leaves them. The integers are sorted unstably (numpy's vectorised
    quicksort: a third of a stable sort's time), since ties are sorted again. None where most rows tie, in a sample of
    TIE_SAMPLE_ROWS or in all (a task id shared by rows far apart)."""
    if _mostly(_tied(np.sort(_prefixes(column.slice(0, TIE_SAMPLE_ROWS))))):
        return None
    prefixes = _prefixes(column)
    order = np.argsort(prefixes)
    tied = _tied(prefixes[order])
    if _mostly(tied):
        return None
    if tied.any():  # tied runs are contiguous and in prefix order, which text order keeps: sort them all as text at once
        rows = np.sort(order[tied])  # in row order, so that Arrow's stable sort leaves equal texts in row order
        order[tied] = rows[pc.sort_indices(column.take(rows)).to_numpy()]
    return order


def _prefixes(column: pa.ChunkedArray) -> np.ndarray:
    """_leading_bytes of every row of a text column (one chunk at least)."""
    return np.concatenate([_leading_bytes(chunk) for chunk in column.chunks])


def _tied(ranked: np.ndarray) -> np.ndarray:
    """Which of these sorted values equal a neighbour."""
    tied = np.zeros(len(ranked), dtype=bool)
    tied[1:] = ranked[1:] == ranked[:-1]
    tied[:-1] |= tied[1:]
    return tied


def _mostly(flags: np.ndarray) -> bool:
    """Whether more than half of these flags are set."""
    return bool(np.count_nonzero(flags) > len(flags) // 2)


def _leading_bytes(texts: pa.Array) -> np.ndarray:
    """Each text's first 8 bytes (zero-padded) as a big-endian integer: ordered as the texts are, ties aside."""
    ends, data = string_buffers(texts)
    offsets = np.frombuffer(ends, dtype=np.int64)
    lengths = np.diff(offsets)
    raw = np.concatenate([np.frombuffer(data, dtype=np.uint8), np.zeros(8, dtype=np.uint8)])  # a read past the end is 0
    leading = raw[offsets[:-1, None] + np.arange(8)]
    short = np.flatnonzero(lengths < 8)
    if short.size:  # bytes past a short text's end belong to the next text: zero them
        leading[short] *= np.arange(8) < lengths[short, None]
    return leading.view(">u8").ravel().astype(np.uint64)


def leaf_digests(connection: duckdb.DuckDBPyConnection, commitment: Commitment, epoch: int,
                 types: dict[str, dict[str, str]] | None = None) -> bytes:
    """The epoch's rows' leaf digests in key order, end to end (row_leaf's, as json_leaf_buffer computes them); `types`
    is column_types()."""
    table_types = (types if types is not None else column_types(connection)).get(commitment.table, {})
    fields = {"commitment": f"'{commitment.name}'"}  # as in row_leaf: a column named commitment replaces the tag
    fields |= _committed_values(commitment, table_types)
    return json_leaf_buffer(connection, JsonLeaves(
        commitment.table, fields, f"{commitment.epoch} = ?", [epoch], (f"CAST({commitment.key} AS VARCHAR)",), LEAF_PREFIX))


def epoch_rows(connection: duckdb.DuckDBPyConnection, commitment: Commitment, epoch: int) -> list[tuple[str, dict[str, Any]]]:
    """(key, committed columns) of one epoch's rows in key order."""
    return [(values[-1], dict(zip(commitment.columns, values[1:]))) for values in _ordered_rows(connection, commitment, epoch)]


def in_transaction(connection: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection has a transaction open (BEGIN without COMMIT): outside one, every statement is a
    transaction of its own and gets the next id."""
    first, second = (connection.execute("SELECT txid_current()").fetchall() for _ in range(2))
    return first == second


ROOT_THREADS = 2
"""Commitments hashed at once, each on a connection of its own: DuckDB writes one query's JSON on about 1.3 of 2 cores
(docs/performance.md, "Bundles")."""


def epoch_roots(connection: duckdb.DuckDBPyConnection, epoch: int, pending: Collection[str] | None = None) -> dict[str, str]:
    """Merkle root of every commitment for the epoch over its leaf digests; nodes stay bytes, hex only for the roots.
    Commitments are hashed ROOT_THREADS at a time on connections of their own, which see committed rows: all of them
    when `connection` has no transaction open; else only those whose table is not in `pending`, the tables the open
    transaction wrote (None: it may have written any, and every commitment is hashed on `connection`)."""
    types = column_types(connection)

    def root(on: duckdb.DuckDBPyConnection, commitment: Commitment) -> str:
        return merkle_root_of_digests(leaf_digests(on, commitment, epoch, types))

    def apart(commitment: Commitment) -> str:
        with connection.cursor() as cursor:
            return root(cursor, commitment)

    if in_transaction(connection):
        shared = [c for c in COMMITMENTS if pending is None or c.table in pending]
    else:
        shared = []
    separate = [c for c in COMMITMENTS if c not in shared]
    with ThreadPoolExecutor(ROOT_THREADS) as pool:
        roots = dict(zip((c.name for c in separate), pool.map(apart, separate)))
    roots |= {c.name: root(connection, c) for c in shared}
    return {c.name: roots[c.name] for c in COMMITMENTS}
