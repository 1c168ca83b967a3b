"""Rows their signers sign as one Merkle root per epoch (record_roots): leaves re-derived in SQL, roots checked
against the signed ones, and a row's proof of inclusion in its signer's root."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from gonka_pipelines.chain.commitments import JsonLeaves, json_leaf_buffer, streamed_leaves
from gonka_pipelines.chain.hashing import columns_digests, json_digests, split_digests
from gonka_pipelines.protocol.crypto import MessageKind, message_prefix
from gonka_pipelines.protocol.merkle import LEAF_PREFIX, build_proof, digest_runs, merkle_root_of_digests, verify_proof
from gonka_pipelines.protocol.messages import result_body, task_verdict_body, training_result_body, training_verdict_body
from gonka_pipelines.protocol.record_roots import RECORD_FIELDS, columns_prefix, root_signature_verifies, root_signatures_verify


@dataclass(frozen=True)
class SignedRecords:
    """A table whose rows are signed through their signer's root: each row's message is `body` (columns of the same
    names), the signer is the `signer` column, and a signer's leaves go in task id order."""

    kind: MessageKind
    table: str
    signer: str
    body: tuple[str, ...]
    where: str = "true"


SIGNED_RECORDS: tuple[SignedRecords, ...] = (
    SignedRecords(MessageKind.RESULT, "task_results", "executor", tuple(result_body("", "", [], [], [])),
                  where="status = 'completed'"),
    SignedRecords(MessageKind.TASK_VERDICT, "task_verdicts", "validator", tuple(task_verdict_body(0, "", "", 0.0, False, ""))),
    SignedRecords(MessageKind.TRAINING_RESULT, "training_results", "executor",
                  tuple(training_result_body("", "", "", [], [], [], 0)), where="status = 'completed'"),
    SignedRecords(MessageKind.TRAINING_VERDICT, "training_verdicts", "validator",
                  tuple(training_verdict_body(0, "", "", 0, 0, False, 0.0, ""))),
)
BY_TABLE = {spec.table: spec for spec in SIGNED_RECORDS}
BY_KIND = {spec.kind: spec for spec in SIGNED_RECORDS}


def record_leaves(rows: pa.Table, chain_id: str, kind: MessageKind, encoding: str) -> bytes:
    """Each row's leaf (its record of this kind, from the columns of the same names) in row order, 32 bytes each end
    to end, in the record encoding: how an executor with its results as columns hashes them before signing their root
    (json: canonical JSON written and hashed in C; columns: the binary layout hashed from the Arrow buffers), both from
    the columns' buffers as they lie. A million leaves as bytes objects cost 0.2 s."""
    if encoding == "columns":
        return columns_digests(LEAF_PREFIX + columns_prefix(chain_id, kind), rows, RECORD_FIELDS[kind])
    body = list(BY_KIND[kind].body)
    return json_digests(LEAF_PREFIX + message_prefix(chain_id, kind), rows.select(body), body)


def record_encoding(connection: duckdb.DuckDBPyConnection, epoch: int) -> str:
    """The record encoding of an epoch's params (tasks.record_encoding; json where the params predate it)."""
    found = connection.execute("SELECT json_extract_string(params_json, '$.tasks.record_encoding') FROM epochs WHERE epoch = ?",
                               [epoch]).fetchall()
    return (found[0][0] if found else None) or "json"


def _leaves(connection: duckdb.DuckDBPyConnection, spec: SignedRecords, chain_id: str, epoch: int,
            signer: str | None = None) -> bytes:
    """The epoch's records of this kind (of one signer, or all) as leaves in the epoch's record encoding, by signer then
    task id, end to end."""
    where, params = f"epoch = ? AND ({spec.where}) AND (? IS NULL OR {spec.signer} = ?)", [epoch, signer, signer]
    if record_encoding(connection, epoch) == "columns":
        return _columns_leaves(connection, spec, chain_id, where, params)
    return json_leaf_buffer(connection, JsonLeaves(spec.table, {c: c for c in spec.body}, where, params, (spec.signer, "task_id"),
                                                   LEAF_PREFIX + message_prefix(chain_id, spec.kind)))


def _columns_leaves(connection: duckdb.DuckDBPyConnection, spec: SignedRecords, chain_id: str, where: str,
                    params: list[Any]) -> bytes:
    """The selected rows' columns-encoded leaves, by signer then task id, end to end: hashed a batch at a time as DuckDB
    streams them, then the digests (not the rows) sorted."""
    relation = connection.sql(f"SELECT {spec.signer} AS _signer, task_id AS _task, {', '.join(spec.body)} FROM {spec.table} "
                              f"WHERE {where}", params=params)
    prefix = LEAF_PREFIX + columns_prefix(chain_id, spec.kind)
    return streamed_leaves(relation, ["_signer", "_task"], lambda batch: columns_digests(prefix, batch, RECORD_FIELDS[spec.kind]))


def derived_roots(connection: duckdb.DuckDBPyConnection, spec: SignedRecords, chain_id: str, epoch: int) -> dict[str, tuple[str, int]]:
    """Signer -> (Merkle root, record count) of its epoch's records of this kind, as its signature must cover them."""
    counts = connection.execute(
        f"SELECT {spec.signer}, count(*) FROM {spec.table} WHERE epoch = ? AND ({spec.where}) GROUP BY 1 ORDER BY 1",
        [epoch]).fetchall()
    runs = digest_runs(_leaves(connection, spec, chain_id, epoch), [count for _, count in counts])
    return {signer: (merkle_root_of_digests(mine), count) for (signer, count), mine in zip(counts, runs, strict=True)}


def signed_roots(connection: duckdb.DuckDBPyConnection, kind: MessageKind, epoch: int) -> dict[str, dict[str, Any]]:
    """Signer -> its record_roots row of this kind and epoch, with the signer's public key (None if not a host)."""
    rows = connection.execute(
        """SELECT r.epoch, r.signer, r.kind, r.root, r.records, r.signature, h.public_key
           FROM record_roots r LEFT JOIN hosts h ON h.address = r.signer WHERE r.epoch = ? AND r.kind = ? ORDER BY r.signer""",
        [epoch, str(kind)]).fetchall()
    names = ("epoch", "signer", "kind", "root", "records", "signature", "public_key")
    return {row[1]: dict(zip(names, row)) for row in rows}


def record_root_problem(connection: duckdb.DuckDBPyConnection, chain_id: str, epoch: int) -> str | None:
    """What is wrong with the epoch's signed roots, or None: every signer of a kind's rows has exactly one root row,
    whose root and count re-derive from its rows and whose signature verifies with its key."""
    kinds = {str(spec.kind) for spec in SIGNED_RECORDS}
    if stray := connection.execute("SELECT kind FROM record_roots WHERE epoch = ? AND NOT list_contains(?, kind) LIMIT 1",
                                   [epoch, sorted(kinds)]).fetchall():
        return f"record_roots holds a root of kind {stray[0][0]!r}, which no table's rows are signed as"
    for spec in SIGNED_RECORDS:
        derived, signed = derived_roots(connection, spec, chain_id, epoch), signed_roots(connection, spec.kind, epoch)
        verifies = dict(zip(signed, root_signatures_verify(chain_id, [(row["public_key"] or "", row) for row in signed.values()])))
        for signer in sorted(derived.keys() | signed.keys()):
            if signer not in signed:
                return f"{spec.table} holds {derived[signer][1]} row(s) of {spec.signer} {signer} that no root of theirs signs"
            row = signed[signer]
            root, count = derived.get(signer, (None, 0))
            if (row["root"], row["records"]) != (root, count):
                return (f"{spec.signer} {signer} signed a {spec.kind} root over {row['records']} record(s) "
                        f"({row['root'][:12]}…), but its {count} {spec.table} row(s) give {(root or '-')[:12]}…: "
                        "a row was changed, added or removed")
            if row["public_key"] is None or not verifies[signer]:
                return f"the {spec.kind} root of {spec.signer} {signer} (record_roots): signature does not verify"
    return None


def signed_proof(connection: duckdb.DuckDBPyConnection, table: str, chain_id: str, epoch: int, row: dict[str, Any]) -> dict[str, Any] | None:
    """How a row of a signed-records table is signed: its signer's root row, the row's leaf and inclusion proof in it,
    and whether both the proof and the root's signature verify. None for a table or row not signed this way."""
    spec = BY_TABLE.get(table)
    if spec is None:
        return None
    signer = row[spec.signer]
    ids = [task_id for (task_id,) in connection.execute(
        f"SELECT task_id FROM {spec.table} WHERE epoch = ? AND ({spec.where}) AND {spec.signer} = ? ORDER BY task_id",
        [epoch, signer]).fetchall()]
    if row["task_id"] not in ids:
        return None  # not a signed record (an expired task's result)
    root = signed_roots(connection, spec.kind, epoch).get(signer)
    if root is None:
        return {"signer": signer, "kind": str(spec.kind), "verified": False, "problem": "no signed root of this signer"}
    leaves = [leaf.hex() for leaf in split_digests(_leaves(connection, spec, chain_id, epoch, signer))]
    index = ids.index(row["task_id"])
    proof = build_proof(leaves, index)
    return {"signer": signer, "kind": str(spec.kind), "root": root["root"], "records": root["records"],
            "signature": root["signature"], "leaf": leaves[index], "proof": proof.as_dict(),
            "verified": verify_proof(leaves[index], proof, root["root"]) and root["public_key"] is not None
            and root_signature_verifies(root["public_key"], chain_id, root)}
