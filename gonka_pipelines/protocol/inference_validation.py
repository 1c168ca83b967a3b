"""Sampled inference validation: who checks which task, how outputs are compared, and the fail vote.

Who checks which task is a documented project deviation from Gonka (which hashes SHA-256(seed ‖ task id) per pair):
each (validator v, task t) pair is still drawn independently with P_v(executor of t), but by seeded skip-sampling.
Validator v walks the epoch's task list (in task id order) with geometric gaps of its largest probability p_max,
drawn from its counter stream splitmix64(k_v + i · golden ratio), k_v = first 8 bytes of SHA-256(v's secret seed);
each task it lands on is kept with P_v(e) / p_max (thinning, from a second stream), so the pairs have the same
independent Bernoulli(P_v(e)) distribution while the cost follows the validations made, not validators × tasks
(10,000 hosts × 1,000,000 tasks: ~10^10 pairs, ~10^6 validations). Without the seed nobody can predict a
validator's draws, and once the seed is revealed at claim time anyone can recompute them. Draws keep 53 bits (what a
float64 holds) and gaps use IEEE products and comparisons only, so every machine draws the same pairs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from gonka_pipelines.protocol.assignment import sha256_u64
from gonka_pipelines.protocol.host_status import MAX_REPUTATION

_SPLITMIX_STEPS = ((np.uint64(30), np.uint64(0xBF58476D1CE4E5B9)), (np.uint64(27), np.uint64(0x94D049BB133111EB)))
_SPLITMIX_FINAL_SHIFT = np.uint64(31)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
"""SplitMix64's increment: stream draw i mixes key + i · this."""
_THINNING_KEY = np.uint64(0xD1B54A32D192ED03)
"""XORed into a validator's key for its second stream, the thinning draws (one per task it lands on)."""
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


def draw_stream(key: int | np.uint64, start: int, count: int) -> np.ndarray:
    """Draws start .. start + count - 1 of a key's stream, 53 bits each: splitmix64(key + i · golden ratio), SplitMix64
    in counter form, so any stretch of the stream can be recomputed on its own."""
    counters = np.arange(start, start + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = np.uint64(key) + counters * _GOLDEN
        for shift, multiplier in _SPLITMIX_STEPS:
            mixed = (mixed ^ (mixed >> shift)) * multiplier
    return (mixed ^ (mixed >> _SPLITMIX_FINAL_SHIFT)) >> _DROPPED_BITS


def geometric_gaps(draws: np.ndarray, p: float, limit: int) -> np.ndarray:
    """Failures before each success of Bernoulli(p) trials, one per 53-bit draw: the largest g with (1 - p)^g > u for
    u = (draw + 1) / 2^53, found bit by bit from (1 - p)^(2^j) by squaring. IEEE products and comparisons only (no
    log), so every machine finds the same gaps; a gap past `limit` comes back as some value >= limit."""
    u = (draws.astype(np.float64) + 1.0) / _FLOAT_SCALE
    powers = [1.0 - p]
    for _ in range(max(1, limit.bit_length())):
        powers.append(powers[-1] * powers[-1])
    gaps = np.zeros(len(u), dtype=np.int64)
    reached = np.ones(len(u))
    for bit in range(len(powers) - 1, -1, -1):
        trial = reached * powers[bit]
        step = trial > u
        reached = np.where(step, trial, reached)
        gaps += step.astype(np.int64) << bit
    return gaps


def _draw_thresholds(probability: float | np.ndarray) -> np.ndarray:
    """ceil(P * 2^53) as uint64: a 53-bit draw d has u = d / 2^53 < P iff d < this."""
    return np.ceil(np.clip(probability, 0.0, 1.0) * _FLOAT_SCALE).astype(np.uint64)


def _hash_u64(texts: Sequence[str]) -> np.ndarray:
    """k_v of each seed: first 8 bytes of SHA-256 of its UTF-8 bytes."""
    return sha256_u64(text.encode() for text in texts)


def skip_sample(key: int | np.uint64, p_max: float, count: int) -> np.ndarray:
    """The positions in 0 .. count - 1 that independent Bernoulli(p_max) trials select, from the key's stream: the
    first at gap 0, each next one gap + 1 further. Costs about p_max · count draws."""
    found: list[np.ndarray] = []
    drawn, last = 0, -1
    while last < count - 1:
        expected = (count - 1 - last) * p_max
        batch = int(expected + 4.0 * expected**0.5) + 16
        positions = last + np.cumsum(geometric_gaps(draw_stream(key, drawn, batch), p_max, count) + 1)
        drawn += batch
        inside = positions[positions < count]
        found.append(inside)
        if len(inside) < batch:
            break
        last = int(inside[-1])
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def validator_draws(key: int | np.uint64, count: int, p_max: float,
                    probability_at: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The positions in 0 .. count - 1 one validator validates, position i independently with probability_at(i) <= p_max:
    skip-sampling at p_max, each landing kept with probability_at(i) / p_max (thinning from the key's second stream).
    probability_at is only asked about the landings, so the cost is about p_max · count, whatever count is."""
    if p_max <= 0.0 or count == 0:
        return np.empty(0, dtype=np.int64)
    landed = skip_sample(key, p_max, count)
    thinning = draw_stream(np.uint64(key) ^ _THINNING_KEY, 0, len(landed))
    return landed[thinning < _draw_thresholds(probability_at(landed) / p_max)]


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
) -> tuple[np.ndarray, np.ndarray]:
    """The (task index, validator index) pairs drawn, sorted by task: each independently with
    P_v = min(1, target(rep_exec) · w_v / (W − w_exec)), never the executor itself (module docstring: skip-sampling).
    P_v = min(1, w_v · c_exec) with c_exec = target / (W − w_exec), so a validator's probabilities are one vector
    product and its draws cost about its validations."""
    if len(task_ids) != len(task_executors):
        raise ValueError(f"{len(task_ids)} tasks but {len(task_executors)} executors")
    weights = np.asarray(pool.weights, dtype=np.int64)
    total_weight = int(weights.sum())
    executors = pool.index_of(task_executors)
    targets = validation_target(traffic, np.asarray(pool.reputations), min_avg)
    per_weight = validation_probability(targets, 1, total_weight, weights)  # c_e, before the cap at 1
    task_rate = np.asarray(per_weight)[executors]
    keys = _hash_u64(pool.seeds)
    highest_rate = float(task_rate.max()) if len(task_rate) else 0.0
    found_tasks: list[np.ndarray] = []
    found_validators: list[np.ndarray] = []
    for validator, weight in enumerate(weights.tolist()):

        def probability_at(positions: np.ndarray, validator: int = validator, weight: int = weight) -> np.ndarray:
            return np.where(executors[positions] == validator, 0.0, np.minimum(1.0, weight * task_rate[positions]))

        tasks = validator_draws(keys[validator], len(task_rate), min(1.0, weight * highest_rate), probability_at)
        found_tasks.append(tasks)
        found_validators.append(np.full(len(tasks), validator, dtype=np.int64))
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


Rows = np.ndarray | Sequence[Sequence[int]] | Sequence[Sequence[float]]
"""Top-k ids or log-probs of one output, one row per position."""


class OutputBatch(NamedTuple):
    """Outputs of one length judged together, every array led by an axis over the outputs: the executor's tokens
    (m, n) and reported top-k ids and log-probs (m, n, k); the validator's forced re-run's top-k (m, n, k_v)."""

    tokens: np.ndarray
    executor_ids: np.ndarray
    executor_logprobs: np.ndarray
    validator_ids: np.ndarray
    validator_logprobs: np.ndarray

    @classmethod
    def of_one(cls, tokens: Sequence[int], executor_ids: Rows, executor_logprobs: Rows, validator_ids: Rows,
               validator_logprobs: Rows) -> OutputBatch:
        """A batch of one output, its shapes checked (similarity's errors)."""
        v_ids, e_ids = np.asarray(validator_ids, dtype=np.int64), np.asarray(executor_ids, dtype=np.int64)
        v_lp = np.asarray(validator_logprobs, dtype=np.float64)
        e_lp = np.asarray(executor_logprobs, dtype=np.float64)
        if v_ids.ndim != 2 or v_ids.shape != v_lp.shape or e_ids.shape != e_lp.shape or e_ids.ndim != 2:
            raise ValueError("top ids and log-probs must be 2-d arrays of the same shape (positions, k)")
        if v_ids.shape[0] != e_ids.shape[0]:
            raise ValueError(f"validator has {v_ids.shape[0]} positions, executor {e_ids.shape[0]}")
        return cls(np.asarray(tokens, dtype=np.int64).reshape(1, -1), e_ids[None], e_lp[None], v_ids[None], v_lp[None])


def similarities(batch: OutputBatch, *, epsilon: float, min_positions: int) -> np.ndarray:
    """max(0, 1 - distance) between the validator's and the executor's top-k log-probs, per output of the batch.

    For each position and each of the validator's k tokens: |lp_v - lp_o| / (eps + |lp_v| + |lp_o|) / 2,
    where a token missing from the executor's top-k gets lp_o = m1 - (m2 - m1), m1 <= m2 the executor's
    two smallest log-probs there; distance = sum / (max(min_positions, positions) * k).
    """
    v_ids, v_lp, e_ids, e_lp = batch.validator_ids, batch.validator_logprobs, batch.executor_ids, batch.executor_logprobs
    outputs, positions, top_k = v_ids.shape
    if e_ids.shape[-1] < 2:
        raise ValueError("the executor must report at least its top-2 log-probs")
    matches = v_ids[..., :, None] == e_ids[..., None, :]
    matched = np.take_along_axis(e_lp, matches.argmax(axis=-1), axis=-1)
    ascending = np.sort(e_lp, axis=-1)
    smallest, second = ascending[..., 0], ascending[..., 1]
    lp_o = np.where(matches.any(axis=-1), matched, (smallest - (second - smallest))[..., None])
    terms = np.abs(v_lp - lp_o) / (epsilon + np.abs(v_lp) + np.abs(lp_o)) / 2
    score = 1.0 - terms.reshape(outputs, positions * top_k).sum(axis=1) / (max(min_positions, positions) * top_k)
    return np.where(score > 0.0, score, 0.0)


def similarity(
    validator_top_ids: np.ndarray | Sequence[Sequence[int]],
    validator_top_logprobs: np.ndarray | Sequence[Sequence[float]],
    executor_top_ids: np.ndarray | Sequence[Sequence[int]],
    executor_top_logprobs: np.ndarray | Sequence[Sequence[float]],
    *,
    epsilon: float,
    min_positions: int,
) -> float:
    """similarities of one output, arrays of shape (positions, k)."""
    batch = OutputBatch.of_one([0] * len(validator_top_ids), executor_top_ids, executor_top_logprobs, validator_top_ids,
                               validator_top_logprobs)
    return float(similarities(batch, epsilon=epsilon, min_positions=min_positions)[0])


def forced_choices(batch: OutputBatch, tie_tolerance: float) -> np.ndarray:
    """The validator's token at each position of its forced re-run: the executor's own token where the re-run puts it
    within tie_tolerance of its best (a near-tie is the same choice), else the re-run's best."""
    matches = batch.validator_ids == batch.tokens[..., None]
    last_match = matches.shape[-1] - 1 - matches[..., ::-1].argmax(axis=-1)
    own = np.take_along_axis(batch.validator_logprobs, last_match[..., None], axis=-1)[..., 0]
    kept = matches.any(axis=-1) & (own >= batch.validator_logprobs[..., 0] - tie_tolerance)
    return np.where(kept, batch.tokens, batch.validator_ids[..., 0])


class Comparisons(NamedTuple):
    """Verdicts on a batch of outputs, as arrays: passed, similarity (0.0 where the tokens were not comparable) and
    the ComparisonReason value."""

    passed: np.ndarray
    similarity: np.ndarray
    reason: np.ndarray

    def one(self, index: int) -> Comparison:
        return Comparison(bool(self.passed[index]), float(self.similarity[index]), ComparisonReason(str(self.reason[index])))


def compare_batch(validator_tokens: np.ndarray, batch: OutputBatch, *, threshold: float, epsilon: float,
                  min_positions: int) -> Comparisons:
    """Each output passes iff the validator's tokens are the executor's (ours: Gonka passes them) and similarity >
    threshold."""
    same = (validator_tokens == batch.tokens).all(axis=1)
    scores = np.where(same, similarities(batch, epsilon=epsilon, min_positions=min_positions), 0.0)
    passed = same & (scores > threshold)
    reason = np.where(~same, ComparisonReason.TOKENS_DIFFER.value,
                      np.where(passed, ComparisonReason.SIMILAR.value, ComparisonReason.DISSIMILAR.value))
    return Comparisons(passed, scores, reason)


# ---------------------------------------------------------------- fail vote


def invalidated(votes_invalid_weight: int, total_weight: int, quorum: float) -> bool:
    """A failed task is invalidated iff 'invalid' votes hold at least quorum (Gonka: 50 %) of all weight (exact)."""
    if total_weight <= 0:
        raise ValueError(f"total weight must be positive, got {total_weight}")
    if not 0 <= votes_invalid_weight <= total_weight:
        raise ValueError(f"invalid-vote weight {votes_invalid_weight} is outside [0, {total_weight}]")
    share = Fraction(str(quorum))
    return votes_invalid_weight * share.denominator >= total_weight * share.numerator
