"""PrecomputedCompute: the epoch's compute seam with model compute replaced by precomputed results.

The `gonka_pipelines.compute.engine.Compute` interface (mine, distances, sprint_batch_size, generate, judge),
but no torch model runs: the benchmark measures the chain's bookkeeping (signing,
sampling, assignment, DuckDB writes, commitments), not the models.

- Sprint distances are a deterministic function of (block hash, public key, nonce): a numpy-vectorised
  splitmix64 hash of the nonce under a SHA-256 key gives two uniforms, Box-Muller turns them into
  z ~ N(0, 1), and distance = sqrt(2 - 2 z / sqrt(vocab)), the distance of a random direction to the
  target (cos ~ N(0, 1/vocab), PROTOCOL.md section 3). With r_target calibrated for the wanted hit rate,
  about that fraction of nonces are hits, and a validator's recomputation agrees bit for bit with the miner.
- `generate` answers every prompt with a fixed token list ending in EOS (the prompt's first bytes) and
  top-5 ids / log-probs derived from the prompt's hash; `score` re-derives that answer's top-5 as an honest
  validator's forced re-run would, so an honest output passes with similarity 1.0 and a garbled one fails.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import time
from collections.abc import Callable
from functools import cached_property, lru_cache
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.compute.llm import EOS, GENERATION_SCHEMA, SCORE_SCHEMA, TOP_K
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.protocol.params import Behaviour

LABEL = "model compute replaced by precomputed results"

OUTPUT_TOKENS = 8
"""Tokens of every precomputed completion by default (fewer when max_tokens is smaller), the last one EOS."""
SPRINT_BATCH_SIZE = 128
"""Nonces per mined batch (as poc-tiny's batch_size): the sprint submits one PoC batch per this many nonces."""

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX = ((np.uint64(30), np.uint64(0xBF58476D1CE4E5B9)), (np.uint64(27), np.uint64(0x94D049BB133111EB)))
_FINAL_SHIFT = np.uint64(31)
_MANTISSA_SHIFT = np.uint64(11)  # keep 53 bits: a float64 uniform
_BASE_LOGPROBS = (-0.05, -3.2, -3.9, -4.5, -5.1)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    for shift, multiplier in _MIX:
        z = (z ^ (z >> shift)) * multiplier
    return z ^ (z >> _FINAL_SHIFT)


def _root(*parts: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256("|".join(("bench/precomputed", *parts)).encode()).digest()[:8], "little"))


def _uniforms(words: np.ndarray) -> np.ndarray:
    """(0, 1) float64 uniforms from the top 53 bits of each word (never exactly 0, so log() is safe)."""
    return ((words >> _MANTISSA_SHIFT).astype(np.float64) + 0.5) * 2.0**-53


@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Top-5 ids for every token id under each of 256 hash keys, (256, EOS + 1, 5): the token first, then four distinct
    others (offsets from disjoint ranges of 1..256, so modulo EOS + 2 = 259 no id repeats in a row); and descending
    top-5 log-probs per key, (256, 5): a confident first choice, jittered by the key."""
    ids = np.empty((256, EOS + 1, TOP_K), dtype=np.int64)
    tokens = np.arange(EOS + 1)
    for key in range(256):
        rng = random.Random(key)
        offsets = np.array([1 + rng.randrange(64) + 64 * i for i in range(TOP_K - 1)])
        ids[key, :, 0] = tokens
        ids[key, :, 1:] = (tokens[:, None] + offsets) % (EOS + 2)
    logprobs = np.array([[round(lp - key / 2550.0 * (i + 1), 6) for i, lp in enumerate(_BASE_LOGPROBS)] for key in range(256)])
    return ids, logprobs


def _head(text: bytes, max_tokens: int, answer_tokens: int) -> bytes:
    """The bytes its precomputed answer of answer_tokens tokens (at most max_tokens) repeats before EOS: the prompt's
    first bytes, the prompt over again where the answer is the longer."""
    length = max(1, min(answer_tokens, max_tokens)) - 1
    return (text * (length // max(1, len(text)) + 1))[:length]


def _answers(texts: list[bytes], heads: list[bytes], positions: list[int], variant: str, schema: pa.Schema) -> pa.Table:
    """Precomputed top-5 rows at `positions[i]` output positions of each prompt, as columns of `schema`: the token at a
    position is the head's byte there (shifted by the prompt's hash under a garbled variant), EOS past the head; its
    top-5 ids and log-probs come from tables keyed by the hash of (variant, prompt). No Python object per position."""
    ids_table, logprob_table = _tables()
    prefix = f"{variant}|".encode()
    digests = np.frombuffer(b"".join(hashlib.sha256(prefix + text).digest()[:3] for text in texts), dtype=np.uint8).reshape(-1, 3)
    counts, head_lengths = np.asarray(positions, dtype=np.int64), np.fromiter(map(len, heads), dtype=np.int64, count=len(heads))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    prompt = np.repeat(np.arange(len(texts)), counts)
    position = np.arange(offsets[-1]) - offsets[:-1][prompt]
    head_starts = np.concatenate([[0], np.cumsum(head_lengths)])[:-1]
    head_bytes = np.frombuffer(b"".join(heads) + b"\0", dtype=np.uint8).astype(np.int64)
    in_head = position < head_lengths[prompt]
    tokens = np.where(in_head, head_bytes[head_starts[prompt] + np.minimum(position, np.maximum(head_lengths[prompt] - 1, 0))], EOS)
    if variant:
        tokens = np.where(in_head, (tokens + digests[prompt, 0]) % 256, EOS)
    top_ids, top_logprobs = ids_table[digests[prompt, 1], tokens], logprob_table[digests[prompt, 2]]
    outer, inner = pa.array(offsets, pa.int32()), pa.array(np.arange(0, TOP_K * len(tokens) + 1, TOP_K), pa.int32())
    columns = {"tokens": pa.ListArray.from_arrays(outer, pa.array(tokens)),
               "top_ids": pa.ListArray.from_arrays(outer, pa.ListArray.from_arrays(inner, pa.array(top_ids.ravel()))),
               "top_logprobs": pa.ListArray.from_arrays(outer, pa.ListArray.from_arrays(inner, pa.array(top_logprobs.ravel())))}
    return pa.table([columns[name] for name in schema.names], schema=schema)


Method = TypeVar("Method", bound=Callable[..., Any])


def _timed(method: Method) -> Method:
    """Adds the call's seconds to the instance's `seconds`: the stand-in's own cost, which the benchmark reports apart
    from the stage that called it (a real engine spends model time there instead)."""
    @functools.wraps(method)
    def timed(self: PrecomputedCompute, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
    return timed  # type: ignore[return-value]


class PrecomputedCompute:
    """Stand-in for TorchCompute (model compute replaced by precomputed results): cheap, deterministic answers.
    `seconds` adds up the time spent in its calls."""

    label = LABEL

    def __init__(self, sprint_model: str, prev_hash: str, device: str | None = None, answer_tokens: int = OUTPUT_TOKENS):
        self.sprint_model, self.prev_hash, self.device, self.answer_tokens = sprint_model, prev_hash, device, answer_tokens
        self.vocab = load_profile(sprint_model).vocab  # reads the profile's YAML only; no model is built
        self.seconds = 0.0

    # -- sprint ---------------------------------------------------------------------------------

    @property
    def sprint_batch_size(self) -> int:
        return SPRINT_BATCH_SIZE

    def _distances(self, public_key: str, nonces: np.ndarray) -> np.ndarray:
        """float64 distance of each nonce, a pure function of (block hash, public key, nonce)."""
        states = _root(self.prev_hash, public_key) + nonces.astype(np.uint64) * _GAMMA
        first, second = _mix64(states), _mix64(states ^ _GAMMA)
        z = np.sqrt(-2.0 * np.log(_uniforms(first))) * np.cos(2.0 * math.pi * _uniforms(second))
        return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * z / math.sqrt(self.vocab)))

    @_timed
    def mine(self, public_key: str, nonce_start: int, count: int, r_target: float, stride: int = 1) -> tuple[list[int], list[float]]:
        if nonce_start < 0 or count < 0 or stride < 1:
            raise ValueError(f"nonce range [{nonce_start}, {nonce_start + count * stride}) step {stride} must be non-negative")
        nonces = np.arange(nonce_start, nonce_start + count * stride, stride, dtype=np.uint64)
        distances = self._distances(public_key, nonces)
        hits = np.flatnonzero(distances < r_target)
        return (nonce_start + hits * stride).tolist(), distances[hits].tolist()

    @_timed
    def distances(self, public_key: str, nonces: list[int]) -> np.ndarray:
        return self._distances(public_key, np.asarray(nonces, dtype=np.uint64)) if len(nonces) else np.empty(0, np.float64)

    # -- inference ------------------------------------------------------------------------------

    @_timed
    def generate(self, model: str, version: str, executor: str, behaviour: str, prompts: list[str],
                 max_tokens: int) -> pa.Table:
        """An honest executor's precomputed answers (the same for every version: the benchmark trains none): each prompt's
        first bytes then EOS; garbled_output answers another (seeded by executor) sequence."""
        variant = f"garbled|{model}|{executor}" if behaviour == Behaviour.GARBLED_OUTPUT else ""
        texts = [prompt.encode() for prompt in prompts]
        heads = [_head(text, max_tokens, self.answer_tokens) for text in texts]
        return _answers(texts, heads, [len(head) + 1 for head in heads], variant, GENERATION_SCHEMA)

    @property
    def eos_token(self) -> int:
        return EOS

    @_timed
    def score(self, model: str, version: str, prompts: pa.Array, outputs: pa.Array) -> pa.Table:
        """What an honest validator's forced re-run reports: the honest answer's top-5 at each output position (positions
        past the honest answer repeat its last row, EOS's). Only the outputs' lengths are read, not their tokens."""
        texts = [prompt.encode() for prompt in prompts.to_pylist()]
        lengths = pc.list_value_length(outputs).to_pylist()
        heads = [_head(text, length, self.answer_tokens) for text, length in zip(texts, lengths, strict=True)]
        return _answers(texts, heads, lengths, "", SCORE_SCHEMA)

    # -- training -------------------------------------------------------------------------------

    @_timed
    def train(self, *args: Any) -> Any:
        """Training is not precomputed (the benchmark's workload orders none): a training task runs for real."""
        return self._torch.train(*args)

    @_timed
    def evaluate(self, *args: Any) -> Any:
        return self._torch.evaluate(*args)

    @property
    def bit_exact(self) -> bool:
        return self._torch.bit_exact

    @cached_property
    def _torch(self) -> TorchCompute:
        return TorchCompute(self.sprint_model, self.prev_hash, self.device)
