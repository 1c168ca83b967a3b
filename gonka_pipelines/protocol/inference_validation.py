"""Sampled inference validation: who checks which task, how outputs are compared, and the fail vote.

The per-(validator, task) draw is a documented project deviation from Gonka (which hashes
SHA-256(seed ‖ task id) per pair): k_v = first 8 bytes of SHA-256(validator seed), h_t = first
8 bytes of SHA-256(task id), u = mix64(k_v XOR h_t) / 2^64, with mix64 the splitmix64 finaliser.
It costs a few numpy ops per pair instead of a hash, so 1,000 hosts x 100,000 tasks runs in
seconds; without the seed nobody can predict a validator's draws, and once the seed is revealed
at claim time anyone can recompute them. u keeps the mix's top 53 bits (what a float64 holds), so
u < P is decided exactly in integers: top53 < ceil(P * 2^53).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from gonka_pipelines.protocol.assignment import sha256_u64
from gonka_pipelines.protocol.host_status import MAX_REPUTATION

DEFAULT_CHUNK_PAIRS = 1 << 18
"""(validator, task) pairs drawn per numpy pass: two uint64 buffers of 2 MiB each."""

_SPLITMIX_STEPS = ((np.uint64(30), np.uint64(0xBF58476D1CE4E5B9)), (np.uint64(27), np.uint64(0x94D049BB133111EB)))
_SPLITMIX_FINAL_SHIFT = np.uint64(31)
_FLOAT_BITS = 53
_DROPPED_BITS = np.uint64(64 - _FLOAT_BITS)
_FLOAT_SCALE = 2.0**_FLOAT_BITS


# ---------------------------------------------------------------- who validates


@dataclass(frozen=True)
class MinAvg:
    """minAvg(T), the validation rate a fully trusted executor still gets at epoch traffic T: the linear
    interpolation through (traffic[i], values[i]), flat outside. Gonka's (100, 5000, 10000) -> (1.0, 0.05, 0.01)
    gives 1.0 for T <= 100, 0.05 + 0.95(5000-T)/4900 below 5000, 0.01 + 0.04(10000-T)/5000 below 10000, then 0.01."""

    traffic: Sequence[float]
    values: Sequence[float]

    def __call__(self, traffic: float | np.ndarray) -> float | np.ndarray:
        result = np.interp(traffic, self.traffic, self.values)
        return float(result) if np.ndim(result) == 0 else result


def validation_target(traffic: float, reputation: int | np.ndarray, min_avg: MinAvg) -> float | np.ndarray:
    """Expected validations per task: minAvg(T) + (1 - minAvg(T))(1 - rep/100), rep the executor's."""
    floor = min_avg(traffic)
    return floor + (1.0 - floor) * (1.0 - np.asarray(reputation) / MAX_REPUTATION)


def validation_probability(
    target: float | np.ndarray, w_v: int | np.ndarray, total_weight: int, w_exec: int | np.ndarray
) -> float | np.ndarray:
    """P_v = min(1, target * w_v / (W - w_exec)); 0 when the executor holds all the weight."""
    others = np.asarray(total_weight - np.asarray(w_exec), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        probability = np.where(others > 0, np.minimum(1.0, np.asarray(target) * w_v / others), 0.0)
    return float(probability) if probability.ndim == 0 else probability


def _mix_draws(keys: np.ndarray, hashes: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Fill out with the top 53 bits of splitmix64(key XOR hash) for every (key row, hash column) pair.

    keys has shape (n, 1) and hashes (1, m); out and scratch are (n, m) uint64 buffers, reused so
    that a chunk costs no allocation (uint64 arithmetic wraps, which the finaliser relies on).
    """
    np.bitwise_xor(keys, hashes, out=out)
    for shift, multiplier in _SPLITMIX_STEPS:
        np.right_shift(out, shift, out=scratch)
        np.bitwise_xor(out, scratch, out=out)
        np.multiply(out, multiplier, out=out)
    np.right_shift(out, _SPLITMIX_FINAL_SHIFT, out=scratch)
    np.bitwise_xor(out, scratch, out=out)
    return np.right_shift(out, _DROPPED_BITS, out=out)


def _draw_thresholds(probability: float | np.ndarray) -> np.ndarray:
    """ceil(P * 2^53) as uint64: a 53-bit draw d has u = d / 2^53 < P iff d < this."""
    return np.ceil(np.clip(probability, 0.0, 1.0) * _FLOAT_SCALE).astype(np.uint64)


def _hash_u64(texts: Sequence[str]) -> np.ndarray:
    """k_v of each seed or h_t of each task id: first 8 bytes of SHA-256 of its UTF-8 bytes."""
    return sha256_u64(text.encode() for text in texts)


def _draw_bits(validator_seeds: Sequence[str], task_ids: Sequence[str]) -> np.ndarray:
    """The 53-bit draws of every (validator, task) pair in one (validators, tasks) array."""
    keys, hashes = _hash_u64(validator_seeds)[:, None], _hash_u64(task_ids)[None, :]
    shape = (keys.shape[0], hashes.shape[1])
    return _mix_draws(keys, hashes, np.empty(shape, np.uint64), np.empty(shape, np.uint64))


def validation_draws(validator_seeds: Sequence[str], task_ids: Sequence[str]) -> np.ndarray:
    """u for every (validator, task) pair, shape (validators, tasks): for inspection and small cases."""
    return _draw_bits(validator_seeds, task_ids) / _FLOAT_SCALE


def should_validate(seed: str, task_id: str, probability: float) -> bool:
    """Whether the holder of seed must validate task_id: u < probability, for one pair."""
    return bool(_draw_bits([seed], [task_id])[0, 0] < _draw_thresholds(probability))


@dataclass(frozen=True)
class ValidatorPool:
    """The epoch's hosts as validators and executors: ids, secret seeds, weights, reputations by index."""

    ids: Sequence[str]
    seeds: Sequence[str]
    weights: Sequence[int]
    reputations: Sequence[int]

    def __post_init__(self) -> None:
        lengths = {len(self.ids), len(self.seeds), len(self.weights), len(self.reputations)}
        if len(lengths) != 1:
            raise ValueError("ids, seeds, weights and reputations must have the same length")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("validator ids must be unique")

    def index_of(self, ids: Sequence[str]) -> np.ndarray:
        """Positions of ids in the pool; a ValueError names the first id that is not in it."""
        position = {host: index for index, host in enumerate(self.ids)}
        try:
            return np.fromiter((position[host] for host in ids), dtype=np.int64, count=len(ids))
        except KeyError as error:
            raise ValueError(f"executor {error.args[0]!r} is not in the validator pool") from error


def select_validations(
    task_ids: Sequence[str],
    task_executors: Sequence[str],
    pool: ValidatorPool,
    traffic: float,
    min_avg: MinAvg,
    *,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
) -> tuple[np.ndarray, np.ndarray]:
    """The (task index, validator index) pairs with u < P_v and validator != executor, sorted by task.

    target comes from the executor's reputation and the epoch traffic T, and P_v from the
    validator's and executor's weights, so P depends on the executor only through one factor:
    tasks are grouped by executor and drawn in chunks of about chunk_pairs pairs (bounded memory).
    """
    if len(task_ids) != len(task_executors):
        raise ValueError(f"{len(task_ids)} tasks but {len(task_executors)} executors")
    keys = _hash_u64(pool.seeds)[:, None]
    weights = np.asarray(pool.weights, dtype=np.int64)
    total_weight = int(weights.sum())
    executors = pool.index_of(task_executors)
    order = np.argsort(executors, kind="stable")
    hashes = _hash_u64(task_ids)[order][None, :]
    group_executors, group_starts = np.unique(executors[order], return_index=True)
    group_ends = np.append(group_starts[1:], len(order))

    n_validators = len(pool.ids)
    columns = max(1, chunk_pairs // max(1, n_validators))
    out, scratch = np.empty((2, n_validators * columns), dtype=np.uint64)
    found_tasks: list[np.ndarray] = []
    found_validators: list[np.ndarray] = []
    for executor, start, end in zip(group_executors, group_starts, group_ends):
        target = validation_target(traffic, pool.reputations[executor], min_avg)
        thresholds = _draw_thresholds(validation_probability(target, weights, total_weight, weights[executor]))
        thresholds[executor] = 0
        if not thresholds.any():
            continue
        for chunk_start in range(start, end, columns):
            chunk_end = min(chunk_start + columns, end)
            shape = (n_validators, chunk_end - chunk_start)
            bits = _mix_draws(
                keys,
                hashes[:, chunk_start:chunk_end],
                out[: shape[0] * shape[1]].reshape(shape),
                scratch[: shape[0] * shape[1]].reshape(shape),
            )
            validator_index, column = np.nonzero(bits < thresholds[:, None])
            found_tasks.append(order[column + chunk_start])
            found_validators.append(validator_index)
    tasks = np.concatenate(found_tasks) if found_tasks else np.empty(0, dtype=np.int64)
    validators = np.concatenate(found_validators) if found_validators else np.empty(0, dtype=np.int64)
    by_task = np.lexsort((validators, tasks))
    return tasks[by_task], validators[by_task]


# ---------------------------------------------------------------- comparison


class ComparisonReason(enum.StrEnum):
    """Why a validator's re-run passed or failed an executor's output."""

    SIMILAR = "similar"
    LENGTH_DIFFERS = "length_differs"
    TOKENS_DIFFER = "tokens_differ"
    DISSIMILAR = "dissimilar"


class Comparison(NamedTuple):
    """A validator's verdict on one output; similarity is 0.0 when the tokens were not comparable."""

    passed: bool
    similarity: float
    reason: ComparisonReason


def similarity(
    validator_top_ids: np.ndarray | Sequence[Sequence[int]],
    validator_top_logprobs: np.ndarray | Sequence[Sequence[float]],
    executor_top_ids: np.ndarray | Sequence[Sequence[int]],
    executor_top_logprobs: np.ndarray | Sequence[Sequence[float]],
    *,
    epsilon: float,
    min_positions: int,
) -> float:
    """max(0, 1 - distance) between top-k log-probs, arrays of shape (positions, k).

    For each position and each of the validator's k tokens: |lp_v - lp_o| / (eps + |lp_v| + |lp_o|) / 2,
    where a token missing from the executor's top-k gets lp_o = m1 - (m2 - m1), m1 <= m2 the executor's
    two smallest log-probs there; distance = sum / (max(min_positions, positions) * k).
    """
    v_ids, e_ids = np.asarray(validator_top_ids), np.asarray(executor_top_ids)
    v_lp = np.asarray(validator_top_logprobs, dtype=np.float64)
    e_lp = np.asarray(executor_top_logprobs, dtype=np.float64)
    if v_ids.ndim != 2 or v_ids.shape != v_lp.shape or e_ids.shape != e_lp.shape or e_ids.ndim != 2:
        raise ValueError("top ids and log-probs must be 2-d arrays of the same shape (positions, k)")
    if v_ids.shape[0] != e_ids.shape[0]:
        raise ValueError(f"validator has {v_ids.shape[0]} positions, executor {e_ids.shape[0]}")
    if e_ids.shape[1] < 2:
        raise ValueError("the executor must report at least its top-2 log-probs")
    positions, top_k = v_ids.shape
    matches = v_ids[:, :, None] == e_ids[:, None, :]
    matched = np.take_along_axis(e_lp, matches.argmax(axis=2), axis=1)
    ascending = np.sort(e_lp, axis=1)
    smallest, second = ascending[:, 0], ascending[:, 1]
    lp_o = np.where(matches.any(axis=2), matched, (smallest - (second - smallest))[:, None])
    terms = np.abs(v_lp - lp_o) / (epsilon + np.abs(v_lp) + np.abs(lp_o)) / 2
    distance = float(terms.sum()) / (max(min_positions, positions) * top_k)
    return max(0.0, 1.0 - distance)


def compare_outputs(
    validator_tokens: Sequence[int],
    executor_tokens: Sequence[int],
    validator_top_ids: np.ndarray | Sequence[Sequence[int]],
    validator_top_logprobs: np.ndarray | Sequence[Sequence[float]],
    executor_top_ids: np.ndarray | Sequence[Sequence[int]],
    executor_top_logprobs: np.ndarray | Sequence[Sequence[float]],
    *,
    threshold: float,
    epsilon: float,
    min_positions: int,
) -> Comparison:
    """Pass iff the token sequences are identical (ours: Gonka passes them) and similarity > threshold."""
    if len(validator_tokens) != len(executor_tokens):
        return Comparison(False, 0.0, ComparisonReason.LENGTH_DIFFERS)
    if list(validator_tokens) != list(executor_tokens):
        return Comparison(False, 0.0, ComparisonReason.TOKENS_DIFFER)
    score = similarity(validator_top_ids, validator_top_logprobs, executor_top_ids, executor_top_logprobs,
                       epsilon=epsilon, min_positions=min_positions)
    if score > threshold:
        return Comparison(True, score, ComparisonReason.SIMILAR)
    return Comparison(False, score, ComparisonReason.DISSIMILAR)


# ---------------------------------------------------------------- fail vote


def invalidated(votes_invalid_weight: int, total_weight: int, quorum: float) -> bool:
    """A failed task is invalidated iff 'invalid' votes hold at least quorum (Gonka: 50 %) of all weight (exact)."""
    if total_weight <= 0:
        raise ValueError(f"total weight must be positive, got {total_weight}")
    if not 0 <= votes_invalid_weight <= total_weight:
        raise ValueError(f"invalid-vote weight {votes_invalid_weight} is outside [0, {total_weight}]")
    share = Fraction(str(quorum))
    return votes_invalid_weight * share.denominator >= total_weight * share.numerator
