"""Record leaves of an executor's results: the json encoding (each result's canonical JSON written and hashed in C,
chain/hashing.json_digests) against the columns encoding (hashed where Arrow holds the columns), and each one's floor:
SHA-256 of as many bytes as its bodies hold, laid end to end, on a thread per core.

    .venv/bin/python bench/bench_record_leaves.py [--results 200000] [--rounds 5]

Each result has 8 output tokens with their top-5 ids and log-probs, as the chain's task_results holds them (int32
lists, float64 log-probs). Prints each path's median time a result over alternating rounds, its range, and the ratios
columns / json and each encoding / its floor.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from rounds import alternating_rounds, print_rounds

from gonka_pipelines.chain.record_roots import record_leaves
from gonka_pipelines.protocol import _sha256
from gonka_pipelines.protocol.crypto import MessageKind, canonical_bytes, message_prefix
from gonka_pipelines.protocol.merkle import LEAF_PREFIX
from gonka_pipelines.protocol.record_roots import columns_body, columns_prefix, record_leaf
from gonka_pipelines.protocol.threads import on_threads

CHAIN_ID = "bench-record-leaves"
TOKENS, TOP_K = 8, 5


def results_table(count: int) -> pa.Table:
    """`count` results of TOKENS tokens with TOP_K candidates each, seeded (the same table every run)."""
    rng = np.random.default_rng(0)

    def lists(values: np.ndarray, width: int) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(np.arange(0, len(values) + 1, width, dtype=np.int32)), pa.array(values))

    return pa.table({
        "task_id": pa.array([f"task-{i:016d}" for i in range(count)]),
        "executor": pa.array([f"gonka1{i % 1000:038d}" for i in range(count)]),
        "output_tokens": lists(rng.integers(0, 50_000, count * TOKENS, dtype=np.int32), TOKENS),
        "top_ids": lists(lists(rng.integers(0, 50_000, count * TOKENS * TOP_K, dtype=np.int32), TOP_K), TOKENS),
        "top_logprobs": lists(lists(-rng.exponential(2.0, count * TOKENS * TOP_K), TOP_K), TOKENS),
    })


def sha256_floor(prefix: bytes, count: int, length: int, laid_out: bytes) -> bytes:
    """SHA-256(prefix || each of `count` spans of `length` bytes) in C, a contiguous part of them per core."""
    def part(start: int, end: int) -> bytes:
        ends = np.arange(start * length, end * length + 1, length, dtype=np.int64)
        return _sha256.pieces(prefix, end - start, b"", [(ends.data, laid_out)])

    return b"".join(on_threads(part, count, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    table = results_table(args.results)
    sample = table.slice(0, 100).to_pylist()
    leaves = record_leaves(table.slice(0, 100), CHAIN_ID, MessageKind.RESULT, "columns")
    assert leaves == b"".join(record_leaf(CHAIN_ID, MessageKind.RESULT, body, "columns") for body in sample), "columns leaves"
    assert record_leaves(table.slice(0, 100), CHAIN_ID, MessageKind.RESULT, "json") == b"".join(
        record_leaf(CHAIN_ID, MessageKind.RESULT, body, "json") for body in sample), "json leaves"
    length = len(columns_body(MessageKind.RESULT, sample[0]))  # every result has the same shape
    json_length = sum(len(canonical_bytes(body)) for body in sample) // len(sample)  # the log-probs' digits vary a little
    laid_out = np.random.default_rng(1).integers(0, 256, args.results * max(length, json_length), dtype=np.uint8).tobytes()
    prefix, json_prefix = (LEAF_PREFIX + columns_prefix(CHAIN_ID, MessageKind.RESULT),
                           LEAF_PREFIX + message_prefix(CHAIN_ID, MessageKind.RESULT))
    paths: dict[str, Callable[[], object]] = {
        "json": lambda: record_leaves(table, CHAIN_ID, MessageKind.RESULT, "json"),
        "columns": lambda: record_leaves(table, CHAIN_ID, MessageKind.RESULT, "columns"),
        "floor: SHA-256 (json)": lambda: sha256_floor(json_prefix, args.results, json_length, laid_out),
        "floor: SHA-256 (columns)": lambda: sha256_floor(prefix, args.results, length, laid_out),
    }
    timings = alternating_rounds(paths, args.rounds, args.results)
    print(f"bench_record_leaves: {args.results:,} results ({TOKENS} tokens, top-{TOP_K}), {length} bytes each in columns, "
          f"about {json_length} in json, "
          f"{args.rounds} rounds, {os.cpu_count()} core(s)")
    print_rounds(timings, "a result", [("columns / json:", "columns", "json"),
                                       ("json / its floor:", "json", "floor: SHA-256 (json)"),
                                       ("columns / its floor:", "columns", "floor: SHA-256 (columns)")])

if __name__ == "__main__":
    main()
