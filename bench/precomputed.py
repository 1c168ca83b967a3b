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

import hashlib
import math
import random
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.compute.llm import EOS, TOP_K, Generation
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.protocol.params import Behaviour

LABEL = "model compute replaced by precomputed results"

OUTPUT_TOKENS = 8
"""Tokens of every precomputed completion (fewer when max_tokens is smaller), the last one EOS."""
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


@lru_cache(maxsize=256)
def _top_rows(key: int) -> list[list[int]]:
    """Top-5 ids for every token id under one of 256 hash keys: the token first, then four distinct others.

    The four offsets come from disjoint ranges of 1..256, so modulo EOS + 2 = 259 no id repeats in a row.
    """
    rng = random.Random(key)
    offsets = [1 + rng.randrange(64) + 64 * i for i in range(TOP_K - 1)]
    return [[token] + [(token + offset) % (EOS + 2) for offset in offsets] for token in range(EOS + 1)]


@lru_cache(maxsize=256)
def _logprob_row(key: int) -> list[float]:
    """Descending top-5 log-probs, a confident first choice, jittered by one of 256 hash keys."""
    jitter = key / 2550.0
    return [round(lp - jitter * (i + 1), 6) for i, lp in enumerate(_BASE_LOGPROBS)]


class PrecomputedCompute:
    """Stand-in for TorchCompute (model compute replaced by precomputed results): cheap, deterministic answers."""

    label = LABEL

    def __init__(self, sprint_model: str, prev_hash: str, device: str | None = None):
        self.sprint_model, self.prev_hash, self.device = sprint_model, prev_hash, device
        self.vocab = load_profile(sprint_model).vocab  # reads the profile's YAML only; no model is built

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

    def mine(self, public_key: str, nonce_start: int, count: int, r_target: float, stride: int = 1) -> tuple[list[int], list[float]]:
        if nonce_start < 0 or count < 0 or stride < 1:
            raise ValueError(f"nonce range [{nonce_start}, {nonce_start + count * stride}) step {stride} must be non-negative")
        nonces = np.arange(nonce_start, nonce_start + count * stride, stride, dtype=np.uint64)
        distances = self._distances(public_key, nonces)
        hits = np.flatnonzero(distances < r_target)
        return (nonce_start + hits * stride).tolist(), distances[hits].tolist()

    def distances(self, public_key: str, nonces: list[int]) -> np.ndarray:
        return self._distances(public_key, np.asarray(nonces, dtype=np.uint64)) if len(nonces) else np.empty(0, np.float64)

    # -- inference ------------------------------------------------------------------------------

    @staticmethod
    def _answer(prompt: str, max_tokens: int, variant: str = "") -> Generation:
        """The precomputed completion of a prompt: its first bytes then EOS, top-5 per position from its hash.

        The per-position rows come from a table precomputed per (hash byte, token) and are shared between
        generations (nothing downstream mutates them), so an answer costs a hash and a few list look-ups.
        """
        text = prompt.encode()
        digest = hashlib.sha256(f"{variant}|".encode() + text).digest()
        length = max(1, min(OUTPUT_TOKENS, max_tokens))
        tokens = list(text[: length - 1])  # the prompt's first byte tokens (compute.llm.encode without BOS)
        tokens = [(t + digest[0]) % 256 for t in tokens] if variant else tokens
        tokens.append(EOS)
        rows = _top_rows(digest[1])
        return Generation(tokens, [rows[t] for t in tokens], [_logprob_row(digest[2])] * len(tokens))

    def generate(self, model: str, version: str, executor: str, behaviour: str, prompts: list[str],
                 max_tokens: int) -> list[Generation]:
        """An honest executor's precomputed answer (the same for every version: the benchmark trains none); garbled_output
        answers another (seeded by executor) sequence."""
        variant = f"garbled|{model}|{executor}" if behaviour == Behaviour.GARBLED_OUTPUT else ""
        return [self._answer(prompt, max_tokens, variant) for prompt in prompts]

    @property
    def eos_token(self) -> int:
        return EOS

    def score(self, model: str, version: str, prompt: str, output: list[int]) -> tuple[list[list[int]], list[list[float]]]:
        """What an honest validator's forced re-run reports: the honest answer's top-5 at each output position."""
        honest = self._answer(prompt, len(output))
        beyond = max(0, len(output) - len(honest.tokens))  # positions past the honest answer repeat its last row
        return (honest.top_ids[:len(output)] + honest.top_ids[-1:] * beyond,
                honest.top_logprobs[:len(output)] + honest.top_logprobs[-1:] * beyond)

    # -- training -------------------------------------------------------------------------------

    def train(self, *args: Any) -> Any:
        """Training is not precomputed (the benchmark's workload orders none): a training task runs for real."""
        return self._torch.train(*args)

    def evaluate(self, *args: Any) -> Any:
        return self._torch.evaluate(*args)

    @property
    def bit_exact(self) -> bool:
        return self._torch.bit_exact

    @cached_property
    def _torch(self) -> TorchCompute:
        return TorchCompute(self.sprint_model, self.prev_hash, self.device)
