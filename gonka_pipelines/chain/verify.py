"""Re-derive every block from its rows: hashes, links, parameter hashes, roots, post-state and signatures."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gonka_pipelines.chain.commitments import COMMITMENTS, UnencodableRow, epoch_roots
from gonka_pipelines.chain.core import CHAIN_ID_KEY
from gonka_pipelines.chain.hashing import NonFiniteFloat, json_texts
from gonka_pipelines.chain.record_roots import record_root_problem
from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.local.cores import core_count, process_pool
from gonka_pipelines.protocol.block import GENESIS_PREV_HASH, BlockHeader, BlockStatus, signature_set_hash
from gonka_pipelines.protocol.crypto import MessageKind, canonical_row_bytes, hash_value, verify_each, verify_encoded_each
from gonka_pipelines.protocol.messages import (
    poc_batch_body,
    poc_verdicts_body,
    seed_commitment_body,
    task_body_of,
    training_body_of,
)
from gonka_pipelines.protocol.rules import RULE_SETS
from gonka_pipelines.protocol.training import SERVED_RULES, served_versions


@dataclass(frozen=True)
class Inconsistency:
    height: int
    message: str

    def __str__(self) -> str:
        return f"block {self.height}: {self.message}"


def _short(digest: str) -> str:
    return digest[:12] + "…"


def _post_state_mismatch(store: ChainStore, height: int) -> str | None:
    """The accounts of a post-state must equal the previous post-state plus the epoch's transfers."""
    stored = {row.pop("address"): row for row in store._records(
        "SELECT address, balance, escrow, locked, collateral FROM account_states WHERE epoch = ? ORDER BY address", [height])}
    derived = {row.pop("address"): row for row in store.running_accounts(height)}
    for address in sorted(stored.keys() | derived.keys()):
        if stored.get(address) != derived.get(address):
            return (f"account {address} is {stored.get(address)} after the epoch, but the previous state plus the "
                    f"epoch's transfers give {derived.get(address)}")
    return None


def served_mismatch(store: ChainStore, height: int, recorded: dict) -> str | None:
    """Each model's served version after an epoch must be what the params' rule picks among the versions up to it."""
    rule = recorded.get("training", {}).get("served_rule") if isinstance(recorded, dict) else None
    if rule not in SERVED_RULES:
        return f"the epoch's recorded parameters name no known training.served_rule ({rule!r})"
    derived = served_versions(store.version_scores(through_epoch=height), rule)
    stored = store.served_versions(height)
    if stored != derived:
        return (f"served_versions records {_short_map(stored)} after the epoch, but rule {rule} over the model versions up to "
                f"it picks {_short_map(derived)}")
    return None


def _short_map(versions: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{model}: {_short(version)}" for model, version in versions.items()) + "}"


BlockCheck = Callable[..., "Inconsistency | None"]
HEADER_FIELDS = tuple(field.name for field in dataclasses.fields(BlockHeader))


def _header(stored: object) -> tuple[BlockHeader | None, str]:
    """The stored header as a BlockHeader, or what is wrong with it (a forged header never raises here)."""
    if not isinstance(stored, dict) or set(stored) != set(HEADER_FIELDS):
        fields = sorted(stored) if isinstance(stored, dict) else type(stored).__name__
        return None, f"the header's fields are {fields}, a header has exactly {sorted(HEADER_FIELDS)}"
    return BlockHeader(**stored), ""


def _with_block(check: BlockCheck) -> BlockCheck:
    """Give a check the block's header and row; a missing block is itself the inconsistency."""

    @functools.wraps(check)
    def run(store: ChainStore, height: int, *args: str) -> Inconsistency | None:
        try:
            block = store.block(height)
        except ChainError as error:
            return Inconsistency(height, str(error))
        if block is None:
            return Inconsistency(height, "no block at this height")
        header, problem = _header(block["header"])
        if header is None:
            return Inconsistency(height, problem)
        return check(store, height, header, block, *args)

    return run


@_with_block
def link_problem(store: ChainStore, height: int, header: BlockHeader, block: dict, expected_prev_hash: str) -> Inconsistency | None:
    """The block names this chain and height, and links to the previous block."""
    if header.height != height or header.chain_id != store.chain_id:
        return Inconsistency(height, f"header names chain {header.chain_id!r} height {header.height}")
    if header.prev_hash != expected_prev_hash:
        return Inconsistency(height, f"links to {_short(header.prev_hash)}, but the previous block is {_short(expected_prev_hash)}")
    return None


@_with_block
def content_problem(store: ChainStore, height: int, header: BlockHeader, block: dict) -> Inconsistency | None:
    """The stored hash is the header's, and the header's parameter hash, roots and post-state re-derive from rows."""

    def problem(message: str) -> Inconsistency:
        return Inconsistency(height, message)

    if header.hash != block["hash"]:
        return problem(f"stored hash {_short(block['hash'])} is not the hash of its header ({_short(header.hash)})")
    if header.prev_hash != block["prev_hash"]:
        return problem(f"stored previous hash {_short(block['prev_hash'])} differs from the header's ({_short(header.prev_hash)})")
    epoch = store._records("SELECT params_hash, params_json FROM epochs WHERE epoch = ?", [height])
    if not epoch:
        return problem("its epoch has no parameters row")
    try:
        recorded = json.loads(epoch[0]["params_json"])
    except json.JSONDecodeError:
        return problem("the epoch's recorded parameters (epochs.params_json) are not valid JSON")
    if header.params_hash != epoch[0]["params_hash"] or header.params_hash != hash_value(recorded):
        return problem("parameter hash does not match the epoch's recorded parameters")
    try:
        roots = epoch_roots(store._connection, height)
    except UnencodableRow as error:
        return problem(f"{error}: a committed row was changed")
    for name, root in roots.items():
        if header.roots.get(name) != root:
            return problem(f"the {name} root in the header is {_short(header.roots.get(name, '-'))} but the {name} "
                           f"rows of epoch {height} give {_short(root)}: a row was changed, added or removed")
    if height > 0 and (mismatch := _post_state_mismatch(store, height)):
        return problem(mismatch)
    if mismatch := served_mismatch(store, height, recorded):
        return problem(mismatch)
    previous = store.block_signatures(height - 1) if height > 0 else []
    if header.prev_signatures != signature_set_hash(previous):
        return problem(f"the header commits to block {height - 1}'s signer set {_short(header.prev_signatures)}, but block "
                       f"{height - 1}'s stored signatures (block_signatures) give {_short(signature_set_hash(previous))}: "
                       f"a signature was dropped, added, moved or changed")
    return None


@_with_block
def signature_problem(store: ChainStore, height: int, header: BlockHeader, block: dict) -> Inconsistency | None:
    """Every signature verifies with its signer's key and in-force weight, and the signers pass 2/3."""
    return _signature_problem(store, header, block["signatures"])


@dataclass(frozen=True)
class _SignedRows:
    """A table of signed messages: how to read (id, signer key, signature, body fields) and rebuild the body. Where
    `json_body` names the body's fields (JSON key -> the read row's column), C writes the canonical body of each row
    where `json_when` holds (hashing.json_texts), and only the other rows' bodies are rebuilt in Python."""

    table: str
    kind: MessageKind
    sql: str
    body: Callable[[dict], dict]
    json_body: Mapping[str, str] = dataclasses.field(default_factory=dict)
    json_when: Callable[[pa.Table], pa.ChunkedArray | pa.Array] | None = None

    def query(self) -> str:
        """SQL of the rows in id order."""
        return self.sql + " ORDER BY id"


SIGNED_ROWS: tuple[_SignedRows, ...] = (
    _SignedRows("tasks", MessageKind.TASK,
                """SELECT t.task_id AS id, a.public_key AS signer_key, t.signature, c.value AS chain_id, t.nonce, t.model,
                          t.prompt, t.max_tokens, t.max_price, t.version
                   FROM tasks t JOIN accounts a ON a.address = t.developer JOIN chain_meta c ON c.key = 'chain_id'
                   WHERE t.epoch = ?""",
                task_body_of,
                {"chain_id": "chain_id", "developer": "signer_key", "max_price": "max_price", "max_tokens": "max_tokens",
                 "model": "model", "nonce": "nonce", "prompt": "prompt"},
                lambda rows: pc.fill_null(pc.equal(rows.column("version"), ""), False)),  # a named version adds a field
    _SignedRows("training_tasks", MessageKind.TRAINING_TASK,
                """SELECT t.task_id AS id, a.public_key AS signer_key, c.value AS chain_id, t.*
                   FROM training_tasks t JOIN accounts a ON a.address = t.developer JOIN chain_meta c ON c.key = 'chain_id'
                   WHERE t.epoch = ?""",
                training_body_of),
    _SignedRows("poc_batches", MessageKind.POC_BATCH,
                """SELECT b.batch_id AS id, h.public_key AS signer_key, b.signature, b.epoch, p.hash AS prev_hash, b.sequence,
                          b.nonces, b.distances
                   FROM poc_batches b JOIN hosts h ON h.address = b.host JOIN blocks p ON p.height = b.epoch - 1
                   WHERE b.epoch = ? AND b.status = 'accepted'""",
                lambda r: poc_batch_body(r["epoch"], r["signer_key"], r["prev_hash"], r["sequence"], r["nonces"], r["distances"])),
    _SignedRows("poc_verdicts", MessageKind.POC_VERDICT,
                """SELECT s.validator AS id, h.public_key AS signer_key, s.*
                   FROM poc_verdict_sets s JOIN hosts h ON h.address = s.validator WHERE s.epoch = ?""",
                lambda r: poc_verdicts_body(r["epoch"], r["validator"], r["hosts"], r["sampled"], r["mismatches"], r["valid"])),
    _SignedRows("seed_commitments", MessageKind.SEED_COMMIT,
                """SELECT s.host AS id, h.public_key AS signer_key, s.* FROM seed_commitments s JOIN hosts h ON h.address = s.host
                   WHERE s.epoch = ?""",
                lambda r: seed_commitment_body(r["epoch"], r["commitment"])),
)


PARALLEL_FROM = 20_000
"""Signed rows of one table and epoch from which verify-chain checks them on every core (a process pool); below it,
starting the pool costs more than it saves."""


def start_signed_rows(store: ChainStore, height: int, stack: contextlib.ExitStack,
                      parallel_from: int) -> Callable[[], Inconsistency | None]:
    """Read every message the epoch holds signed alone (tasks, accepted batches, sprint verdicts, seed commitments) and
    start checking that each verifies with its signer's key over the body rebuilt from its row: tables of
    `parallel_from` rows or more go to a process pool (held by `stack`) that works while the caller goes on, in parts
    sent as Arrow columns (a million rows as dicts took seconds to build and pickle). The function returned waits for
    the checks and gives the first row that fails, in table order."""
    chain_id, workers = store.chain_id, core_count()
    pool: ProcessPoolExecutor | None = None
    checks: list[tuple[_SignedRows, pa.Table, Callable[[], int | None]]] = []
    for index, spec in enumerate(SIGNED_ROWS):
        rows = store._arrow(spec.query(), [height])
        if rows.num_rows >= parallel_from and workers > 1:
            if pool is None:
                pool = process_pool()
                stack.callback(pool.shutdown, wait=True, cancel_futures=True)  # an early answer does not wait for all
            size = -(-rows.num_rows // (workers * 4))
            parts = [(start, pool.submit(_first_bad, index, chain_id, _compact(rows, start, size)))
                     for start in range(0, rows.num_rows, size)]
            checks.append((spec, rows, functools.partial(_first_of, parts)))
        else:
            checks.append((spec, rows, functools.partial(_first_bad, index, chain_id, rows)))

    def first_problem() -> Inconsistency | None:
        for spec, rows, first_bad in checks:
            if (bad := first_bad()) is not None:
                return Inconsistency(height, f"{spec.table} row {rows.column('id')[bad].as_py()[:24]}: signature does not "
                                             "verify over the row's content")
        return None

    return first_problem


def _compact(rows: pa.Table, start: int, size: int) -> pa.Table:
    """Rows start .. start + size as a table of their own buffers (a slice would pickle its whole parent's)."""
    return rows.slice(start, size).take(np.arange(min(size, rows.num_rows - start)))


def signed_row_problem(store: ChainStore, height: int, parallel_from: int = PARALLEL_FROM) -> Inconsistency | None:
    """Every message the epoch holds signed alone verifies (start_signed_rows, waited for); large tables are checked on
    every core."""
    with contextlib.ExitStack() as stack:
        return start_signed_rows(store, height, stack, parallel_from)()


def _first_of(parts: list[tuple[int, Future[int | None]]]) -> int | None:
    """Position of the first bad row over a table's parts (start, the pool's answer for the part)."""
    return next((start + offset for start, part in parts if (offset := part.result()) is not None), None)


def _first_bad(spec_index: int, chain_id: str, rows: pa.Table) -> int | None:
    """Position of the first row whose signature does not verify, or None (the rows checked on a thread per core):
    bodies of the shape C writes are written from the columns, the others rebuilt from the row in Python."""
    spec = SIGNED_ROWS[spec_index]
    encoded: list[bytes | None] = [None] * rows.num_rows
    written = np.zeros(rows.num_rows, bool)
    if spec.json_body and spec.json_when is not None and rows.num_rows:
        written = np.asarray(spec.json_when(rows), dtype=bool)
        chosen = np.flatnonzero(written)
        fields = rows.select(list(spec.json_body.values()))
        try:
            texts = json_texts(b"", fields if written.all() else fields.take(chosen), list(spec.json_body))
        except NonFiniteFloat:  # a tampered float: such rows are rebuilt in Python, where they verify nothing
            written[:] = False
        else:
            for position, text in zip(chosen.tolist(), texts, strict=True):
                encoded[position] = text
    rest = np.flatnonzero(~written)
    for position, row in zip(rest.tolist(), (rows if not written.any() else rows.take(rest)).to_pylist(), strict=True):
        encoded[position] = _encoded_body(spec, row)
    verdicts = verify_encoded_each(chain_id, spec.kind, list(zip(
        rows.column("signer_key").to_pylist(), encoded, rows.column("signature").to_pylist(), strict=True)))
    return next((i for i, verifies in enumerate(verdicts) if not verifies), None)


def _encoded_body(spec: _SignedRows, row: dict) -> bytes | None:
    """The canonical bytes of the body a row was signed as, or None where its values have none (a non-finite float
    written into a tampered row): its signature then verifies nothing."""
    try:
        return canonical_row_bytes(spec.body(row))
    except (ValueError, TypeError):
        return None


def signed_message_problem(store: ChainStore, height: int) -> Inconsistency | None:
    """Every message of the epoch is signed: rows signed alone verify (signed_row_problem), and every executor's
    results and every validator's verdicts, inference and training, re-derive the root it signed (record_roots)."""
    return signed_row_problem(store, height) or _record_root_inconsistency(store, height)


def _record_root_inconsistency(store: ChainStore, height: int) -> Inconsistency | None:
    try:
        found = record_root_problem(store._connection, store.chain_id, height)
    except UnencodableRow as error:
        return Inconsistency(height, f"{error}: a signed record was changed")
    return Inconsistency(height, found) if found else None


def verify_block(store: ChainStore, height: int, expected_prev_hash: str) -> Inconsistency | None:
    """First inconsistency of one block (finalized or proposed), or None. The signed rows' checks start first, so the
    pool verifies signatures while this process re-derives the block's roots, post-state and record roots; problems
    are reported in that order all the same (signed rows before record roots)."""
    with contextlib.ExitStack() as stack:
        signed_rows = start_signed_rows(store, height, stack, PARALLEL_FROM)
        if problem := link_problem(store, height, expected_prev_hash) or content_problem(store, height):
            return problem
        record_roots = _record_root_inconsistency(store, height)
        return signed_rows() or record_roots or signature_problem(store, height)


def _signature_problem(store: ChainStore, header: BlockHeader, signatures: list[dict]) -> Inconsistency | None:
    """Every signature verifies with the signer's key, carries its in-force weight, and together they pass 2/3."""
    weights = store.signing_weights(header.height)
    keys = dict(store._query("SELECT address, public_key FROM hosts"))
    body = header.as_dict()
    verified = verify_each(header.chain_id, MessageKind.BLOCK, [(keys.get(s["signer"], ""), body, s["signature"]) for s in signatures])
    for signature, verifies in zip(signatures, verified):
        signer = signature["signer"]
        if signer not in keys or not verifies:
            return Inconsistency(header.height, f"signature of {signer} does not verify")
        if signature["weight"] != weights.get(signer, 0):
            return Inconsistency(header.height, f"signature of {signer} claims weight {signature['weight']}, "
                                                f"its signing weight is {weights.get(signer, 0)}")
    signed = sum(s["weight"] for s in signatures)
    try:
        rule_set = RULE_SETS[store.rules_name(header.height)]
    except (ChainError, KeyError, ValueError, TypeError):
        return Inconsistency(header.height, "the epoch's recorded parameters name no known rule set")
    if not rule_set.quorum_reached(signed, sum(weights.values())):
        return Inconsistency(header.height, f"signers hold {signed} of {sum(weights.values())} weight, not more than 2/3")
    return None


def status_problem(store: ChainStore, head: int) -> Inconsistency | None:
    """The statuses agree with the blocks: every epoch up to the head and its block are finalized, at most the head's
    successor is open or proposed (its block, if any, in the same state), and no table holds rows of a later epoch."""
    statuses = set(BlockStatus)
    rows = store._query("""SELECT coalesce(e.epoch, b.height), e.status, b.status
                           FROM epochs e FULL JOIN blocks b ON b.height = e.epoch ORDER BY 1""")
    for height, epoch_status, block_status in rows:
        if epoch_status is None:
            return Inconsistency(height, "the block has no epochs row (table epochs)")
        if epoch_status not in statuses or block_status not in (*statuses, None):
            return Inconsistency(height, f"unknown status: epochs.status {epoch_status!r}, blocks.status {block_status!r}")
        if height <= head and epoch_status != BlockStatus.FINALIZED:
            return Inconsistency(height, f"epochs.status is {epoch_status!r} at or below the finalized head {head}")
        if height > head + 1 or (height == head + 1 and epoch_status == BlockStatus.FINALIZED):
            return Inconsistency(height, f"epoch {height} is {epoch_status!r} (epochs.status) beyond the finalized head "
                                         f"{head}: the chain was cut short or a status was changed")
        if block_status is not None and block_status != epoch_status:
            return Inconsistency(height, f"blocks.status is {block_status!r} but epochs.status is {epoch_status!r}")
        if block_status is None and epoch_status != BlockStatus.OPEN:
            return Inconsistency(height, f"epochs.status is {epoch_status!r} but table blocks has no block at this height")
    unsigned = store._scalar("SELECT min(height) FROM block_signatures WHERE height NOT IN (SELECT height FROM blocks)")
    if unsigned is not None:
        return Inconsistency(unsigned, "table block_signatures holds signatures of a block that does not exist")
    for commitment in COMMITMENTS:
        beyond = store._scalar(f"SELECT max({commitment.epoch}) FROM {commitment.table}")
        if beyond is not None and beyond > head + 1:
            return Inconsistency(beyond, f"table {commitment.table} holds rows of epoch {beyond}, beyond the head's successor "
                                         f"{head + 1}: no block commits to them, so they were forged")
    return None


def meta_problem(store: ChainStore) -> Inconsistency | None:
    """chain_meta holds the chain id alone; every other value a payout reads comes from committed rows."""
    keys = [key for (key,) in store._query("SELECT key FROM chain_meta ORDER BY key")]
    if keys != [CHAIN_ID_KEY]:
        return Inconsistency(0, f"chain_meta holds the keys {keys}: it holds exactly {[CHAIN_ID_KEY]} (everything else is read "
                                "from committed rows), so a row was forged, renamed or deleted")
    return None


@dataclass(frozen=True)
class Anchor:
    """What is known of a block from outside the database: its hash (or a prefix of 12+ digits) and, where Dagster
    recorded it, the hash of its signer set (the head's signatures are committed by no later header)."""

    block_hash: str
    signatures_hash: str | None = None


@dataclass(frozen=True)
class ChainReport:
    blocks_verified: int
    head: int
    first_problem: Inconsistency | None
    verified: dict[int, tuple[str, str]] = dataclasses.field(default_factory=dict)
    """height -> (block hash, fingerprint) of every block that verified, for the next incremental check."""
    rederived: int = 0
    """Blocks re-derived in full this time (the others matched what an earlier check verified)."""


FINGERPRINTED: tuple[tuple[str, str], ...] = tuple(dict.fromkeys(
    [(c.table, c.epoch) for c in COMMITMENTS] + [("epochs", "epoch"), ("blocks", "height"), ("block_signatures", "height")]))
"""(table, SQL of a row's epoch) of every row a block's verification reads: the committed tables, the epoch's params
row, the block and its signatures."""


def epoch_fingerprints(store: ChainStore) -> dict[int, str]:
    """Per epoch, a digest of every column of every row its block's verification reads (one grouped scan per table):
    a changed, added or removed row changes it. DuckDB's 64-bit row hash spots change cheaply; it is no defence
    against a forger who also edits the memory, which is what `--full` is for."""
    parts: dict[int, list[list]] = {}
    for table, epoch in FINGERPRINTED:
        for height, count, xor, total in store._query(
                f"SELECT {epoch} AS _epoch, count(*), bit_xor(hash(_row)), CAST(sum(hash(_row)) AS VARCHAR) "
                f"FROM {table} _row GROUP BY _epoch"):
            parts.setdefault(height, []).append([table, count, xor, total])
    return {height: hash_value(sorted(rows)) for height, rows in parts.items()}


def verify_chain(store: ChainStore, anchors: Mapping[int, Anchor] | None = None,
                 verified: Mapping[int, tuple[str, str]] | None = None) -> ChainReport:
    """Walk the finalized blocks from genesis, stopping at the first inconsistency, then check the statuses. Anchors
    are what is known of blocks from outside the database (an auditor's pinned head, what Dagster recorded): a missing
    or different block, or a different signer set, at an anchored height is reported, so a chain cut short or
    rewritten under its own hashes cannot verify.

    With `verified` (an earlier report's), a block whose hash and row fingerprint are unchanged is only checked for its
    link; every other block is re-derived in full. Without it, every block is."""
    heights = store.finalized_heights()
    if problem := meta_problem(store):
        return ChainReport(0, heights[-1] if heights else -1, problem)
    fingerprints = epoch_fingerprints(store) if verified is not None else {}
    checked: dict[int, tuple[str, str]] = {}
    prev_hash, rederived = GENESIS_PREV_HASH, 0
    for index, height in enumerate(heights):
        if height != index:
            return ChainReport(index, heights[-1], Inconsistency(index, "missing: the finalized heights have a gap"),
                               checked, rederived)
        block_hash = store.block_hash(height)
        memory = (block_hash, fingerprints.get(height, ""))
        unchanged = verified is not None and verified.get(height) == memory
        rederived += not unchanged
        if problem := (link_problem(store, height, prev_hash) if unchanged else verify_block(store, height, prev_hash)):
            return ChainReport(index, heights[-1], problem, checked, rederived)
        checked[height] = memory
        prev_hash = block_hash
    head = heights[-1] if heights else -1
    problem = status_problem(store, head) or next(
        (p for height, anchor in sorted((anchors or {}).items()) if (p := _anchor_problem(store, head, height, anchor))), None)
    return ChainReport(len(heights), head, problem, checked if verified is not None else {}, rederived)


def _anchor_problem(store: ChainStore, head: int, height: int, anchor: Anchor) -> Inconsistency | None:
    if height > head:
        return Inconsistency(height, f"missing: the anchor says block {height} is {_short(anchor.block_hash)}, but the "
                                     f"chain's finalized head is block {head}: it was cut short")
    if not store.block_hash(height).startswith(anchor.block_hash):
        return Inconsistency(height, f"is {_short(store.block_hash(height))}, but the anchor says "
                                     f"{_short(anchor.block_hash)}: it was replaced")
    stored = signature_set_hash(store.block_signatures(height))
    if anchor.signatures_hash is not None and stored != anchor.signatures_hash:
        return Inconsistency(height, f"its signatures (block_signatures) hash to {_short(stored)}, but the anchor recorded "
                                     f"{_short(anchor.signatures_hash)}: a signature was dropped, added or changed")
    return None
