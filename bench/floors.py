"""Physical floors for the epoch benchmark: what the same work costs with nothing of the project in the way.

Measured in the benchmark's own run, on all cores: raw Ed25519 signing and verifying (pynacl in a process pool),
raw Arrow appends of a stage's rows into plain DuckDB tables of the same column types (no constraints), raw Arrow
reads of the rows a stage reads in bulk (a plain SELECT of them, no sort), SHA-256 over the buffers of the records a
stage signs through Merkle roots, and an Arrow read of a block's committed columns with SHA-256 over their buffers. A
stage's floor is the sum of the parts its work needs; stage seconds / floor is how far the project is from the
machine. The signature floor starts its own process pool on purpose: it must not share the project's pool set-up
(local/cores.py), whose cost it would hide.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from nacl.signing import SigningKey

from gonka_pipelines.chain.commitments import COMMITMENTS
from gonka_pipelines.chain.record_roots import SIGNED_RECORDS
from gonka_pipelines.chain.store import ChainStore

MESSAGE_BYTES = 320
"""About one signed message's canonical body (a developer's task, a PoC batch, a signer's root)."""
STAGE_READS: dict[str, tuple[str, ...]] = {
    "task_results": ("SELECT task_id, developer, model, version, prompt, prompt_tokens, max_tokens, escrow FROM tasks "
                     "WHERE epoch = $epoch",),
    "task_verdicts": ("SELECT task_id, executor, cost, output_tokens, top_ids, top_logprobs FROM task_results "
                      "WHERE epoch = $epoch",
                      "SELECT prompt, model, version, max_tokens FROM tasks WHERE epoch = $epoch"),
    "rewards": ("SELECT host, amount FROM fee_shares WHERE epoch = $epoch",
                "SELECT task_id, cost FROM task_results WHERE epoch = $epoch",
                "SELECT task_id, developer FROM tasks WHERE epoch = $epoch",
                "SELECT task_id, outcome FROM task_outcomes WHERE epoch = $epoch"),
}
"""Per stage, the rows it reads in bulk, as plain scans of the epoch's rows (no join, no sort): execution the tasks;
validation the epoch's results with their outputs, and the tasks' prompts (it needs the outputs and prompts of the
tasks it validates, about two thirds of them at one validation per task, scattered through the table, so a scan is what
fetching them costs: a semi-join on their ids took longer, 1.06 s against 0.93 s); rewards the fee shares and what fees
are settled from."""
VERIFIED_TABLES = {"epoch_tasks": ("tasks", "training_tasks", "rejected_tasks"), "sprint_batches": ("poc_batches",)}
"""Per stage, where it writes one row per signature it checked: collect's submissions (developers signed them outside
the epoch) and the sprint's PoC batches (hosts sign them in the stage, and the chain checks each as it admits it)."""


def _sign_many(count: int) -> int:
    key = SigningKey(bytes(range(32)))
    message = bytes(MESSAGE_BYTES)
    for _ in range(count):
        key.sign(message)
    return count


def _verify_many(count: int) -> int:
    key = SigningKey(bytes(range(32)))
    signed = key.sign(bytes(MESSAGE_BYTES))
    verify = key.verify_key.verify
    for _ in range(count):
        verify(signed)
    return count


@dataclass(frozen=True)
class SignatureFloor:
    """Seconds per Ed25519 sign and per verify with every core busy (median of rounds, range kept for the report)."""

    cores: int
    sign_seconds: float
    verify_seconds: float
    sign_range: tuple[float, float]
    verify_range: tuple[float, float]

    @classmethod
    def measure(cls, operations: int = 20_000, rounds: int = 3) -> SignatureFloor:
        """Time `operations` signs, then as many verifies, spread over one process per core, `rounds` times."""
        cores = os.cpu_count() or 1
        per_core = max(1, operations // cores)
        timings: dict[str, list[float]] = {"sign": [], "verify": []}
        with ProcessPoolExecutor(cores) as pool:
            list(pool.map(_sign_many, [10] * cores))  # start the workers and load nacl before timing
            for _ in range(rounds):
                for name, work in (("sign", _sign_many), ("verify", _verify_many)):
                    start = time.perf_counter()
                    done = sum(pool.map(work, [per_core] * cores))
                    timings[name].append((time.perf_counter() - start) / done)
        return cls(cores, statistics.median(timings["sign"]), statistics.median(timings["verify"]),
                   (min(timings["sign"]), max(timings["sign"])), (min(timings["verify"]), max(timings["verify"])))


def arrow_append_seconds(scratch: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]) -> float:
    """Seconds to append each Arrow table to an empty plain table of its column types in `scratch`, made anew each
    time: kept across epochs, the scratch tables grew and their appends with them (rewards' floor rose from 0.20 s to
    0.66 s over three epochs of 1,000 x 100,000, above the stage's 0.48 s)."""
    elapsed = 0.0
    for name, arrow in tables.items():
        scratch.register("incoming", arrow)
        scratch.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM incoming LIMIT 0')
        start = time.perf_counter()
        scratch.execute(f'INSERT INTO "{name}" SELECT * FROM incoming')
        elapsed += time.perf_counter() - start
        scratch.unregister("incoming")
    return elapsed


def read_seconds(store: ChainStore, stage: str, epoch: int) -> float:
    """Seconds to read the rows the stage reads in bulk (STAGE_READS) as Arrow tables; 0 for a stage reading none."""
    if stage not in STAGE_READS:
        return 0.0
    start = time.perf_counter()
    for sql in STAGE_READS[stage]:
        store._connection.execute(sql, {"epoch": epoch}).to_arrow_table()
    return time.perf_counter() - start


def signed_records_hash_seconds(written: dict[str, pa.Table]) -> float:
    """Seconds to SHA-256 the buffers of the records the stage wrote and signs through its signers' Merkle roots (their
    body columns), one thread per core: a root commits to every byte of its records, whatever their encoding."""
    bodies = [_signed(written[spec.table], spec.where).select(list(spec.body)) for spec in SIGNED_RECORDS if spec.table in written]
    start = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_hash_array, [chunk for body in bodies for column in body.columns for chunk in column.chunks]))
    return time.perf_counter() - start if bodies else 0.0


def _signed(rows: pa.Table, where: str) -> pa.Table:
    """The rows a SignedRecords condition keeps (every row, or the completed ones)."""
    if where == "true":
        return rows
    if where == "status = 'completed'":
        return rows.filter(pc.equal(rows["status"], "completed"))
    raise ValueError(f"floors.py does not know the signed records' condition {where!r}")


def _hash_buffers(table: pa.Table) -> int:
    """SHA-256 over every buffer of every column; the bytes hashed."""
    return sum(_hash_array(chunk) for column in table.columns for chunk in column.chunks)


def _hash_array(array: pa.Array) -> int:
    """SHA-256 over every buffer of an Arrow array (its children's too); the bytes hashed."""
    hashed = 0
    for buffer in array.buffers():
        if buffer is not None:
            hashlib.sha256(buffer).digest()
            hashed += buffer.size
    return hashed


@dataclass(frozen=True)
class ReadHashFloor:
    """An epoch's committed columns read as Arrow and hashed (SHA-256 releases the GIL: one thread per core)."""

    rows: int
    signatures: int
    bytes_hashed: int
    seconds: float

    @classmethod
    def measure(cls, store: ChainStore, epoch: int) -> ReadHashFloor:
        start = time.perf_counter()
        tables = [store._arrow(f"SELECT {', '.join(c.columns)} FROM {c.table} WHERE {c.epoch} = ?", [epoch])
                  for c in COMMITMENTS]
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            hashed = sum(pool.map(_hash_buffers, tables))
        seconds = time.perf_counter() - start
        signatures = sum(t.num_rows for t in tables if "signature" in t.column_names)
        return cls(sum(t.num_rows for t in tables), signatures, hashed, seconds)


def stage_floor(stage: str, written: dict[str, pa.Table], append_seconds: float, signatures: SignatureFloor,
                read_hash: ReadHashFloor | None, checked_ahead: int, read: float, hashed: float) -> dict[str, float]:
    """The parts of one stage's floor, in seconds: reading what it reads in bulk, appending what it wrote, hashing the
    records it signs through roots, the signatures it made and those it checked (collect: but the `checked_ahead`
    ones, admitted as they arrived), and for block_proposal reading and hashing the epoch's committed rows."""
    signed = sum(t.num_rows for t in written.values() if "signature" in t.column_names)
    taken = sum(written[t].num_rows for t in VERIFIED_TABLES.get(stage, ()) if t in written)
    verified = max(0, taken - checked_ahead) if stage == "epoch_tasks" else taken
    parts = {"read": read, "append": append_seconds, "hash": hashed,
             "sign": (0 if stage == "epoch_tasks" else signed) * signatures.sign_seconds,
             "verify": verified * signatures.verify_seconds}
    if stage == "block_proposal" and read_hash is not None:
        parts["read+hash"] = read_hash.seconds
    return parts
