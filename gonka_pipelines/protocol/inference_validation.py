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
import polars as pl

from gonka_pipelines.protocol import _comparison
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


def stream_draws(keys: np.ndarray | np.uint64, counters: np.ndarray) -> np.ndarray:
    """Draw counters[i] of the stream of keys[i] (or of one key), 53 bits each: splitmix64(key + i · golden ratio),
    SplitMix64 in counter form, so any stretch of any stream can be recomputed on its own."""
    with np.errstate(over="ignore"):
        mixed = keys + counters.astype(np.uint64) * _GOLDEN
        for shift, multiplier in _SPLITMIX_STEPS:
            mixed = (mixed ^ (mixed >> shift)) * multiplier
    return (mixed ^ (mixed >> _SPLITMIX_FINAL_SHIFT)) >> _DROPPED_BITS


def geometric_gaps(draws: np.ndarray, p: float | np.ndarray, limit: int, of: np.ndarray | None = None) -> np.ndarray:
    """Failures before each success of Bernoulli(p) trials, one per 53-bit draw: the largest g with (1 - p)^g > u for
    u = (draw + 1) / 2^53, found bit by bit from (1 - p)^(2^j) by squaring. IEEE products and comparisons only (no
    log), so every machine finds the same gaps; a gap past `limit` comes back as some value >= limit. `p`: one
    probability, one per draw, or with `of` one per stream, draw i's being p[of[i]]: the squares are then made per
    stream and gathered a bit at a time (at 10,000 validators x a million tasks, 21 arrays of 1.56 million squares took
    1.2-1.5 s to lay out in the epoch's process, 0.3 s gathered)."""
    u = (draws.astype(np.float64) + 1.0) / _FLOAT_SCALE
    powers = [1.0 - p]
    for _ in range(max(1, limit.bit_length())):
        powers.append(powers[-1] * powers[-1])
    gaps = np.zeros(len(u), dtype=np.int64)
    reached = np.ones(len(u))
    for bit in range(len(powers) - 1, -1, -1):
        trial = reached * (powers[bit] if of is None else np.asarray(powers[bit])[of])
        step = trial > u
        reached = np.where(step, trial, reached)
        gaps += step.astype(np.int64) << bit
    return gaps


def _draw_thresholds(probability: float | np.ndarray) -> np.ndarray:
    """ceil(P * 2^53) as uint64: a 53-bit draw d has u = d / 2^53 < P iff d < this."""
    return np.ceil(np.clip(probability, 0.0, 1.0) * _FLOAT_SCALE).astype(np.uint64)


def _hash_u64(texts: Sequence[str]) -> np.ndarray:
    """k_v of each seed: first 8 bytes of SHA-256 of its UTF-8 bytes."""
    return sha256_u64(b"", texts)


BATCH_SIGMAS, BATCH_SLACK = 4.0, 16
"""A stream's batch of draws: its expected landings plus this many standard deviations and draws (at least one), so
a second round is rare; the batches change the cost, never the positions."""


def _runs(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consecutive runs of these lengths laid end to end: each element's run, its index within the run, and each run's
    first element."""
    firsts = np.cumsum(lengths) - lengths
    owner = np.repeat(np.arange(len(lengths)), lengths)
    return owner, np.arange(int(lengths.sum())) - firsts[owner], firsts


def skip_samples(keys: np.ndarray, p_max: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """For each stream (keys[i], p_max[i] > 0), the positions in 0 .. count - 1 that independent Bernoulli(p_max[i])
    trials select from its key's stream, the first at gap 0, each next one gap + 1 further: (stream, position) of each,
    by stream then position. Every stream draws a batch of about p_max · count at once (a few more rounds for the rare
    stream whose batch all landed inside), so the cost follows the landings, whatever the number of streams."""
    owners: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    active = np.arange(len(keys))
    drawn, last = np.zeros(len(keys), dtype=np.int64), np.full(len(keys), -1, dtype=np.int64)
    while len(active):
        expected = (count - 1 - last) * p_max[active]
        batch = (expected + BATCH_SIGMAS * np.sqrt(expected)).astype(np.int64) + BATCH_SLACK
        owner, within, firsts = _runs(batch)
        stream = active[owner]
        steps = geometric_gaps(stream_draws(keys[stream], drawn[owner] + within), p_max[active], count, of=owner) + 1
        walked = np.cumsum(steps)
        landed = last[owner] + walked - (walked[firsts] - steps[firsts])[owner]
        inside = landed < count
        owners.append(stream[inside])
        positions.append(landed[inside])
        again = np.bincount(owner[inside], minlength=len(active)) == batch
        active, drawn, last = active[again], (drawn + batch)[again], landed[firsts + batch - 1][again]
    owner, position = np.concatenate([np.empty(0, np.int64), *owners]), np.concatenate([np.empty(0, np.int64), *positions])
    order = np.argsort(owner, kind="stable")  # each round is in (stream, position) order and lands past the one before
    return owner[order], position[order]


def validators_draws(keys: np.ndarray, p_max: np.ndarray, count: int,
                     probability_at: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(validator, position) of every position in 0 .. count - 1 each validator i validates, position t independently
    with probability_at(i, t) <= p_max[i]: skip-sampling at p_max[i], each landing kept with probability_at / p_max
    (thinning, from the key's second stream, one draw per landing). probability_at is only asked about the landings,
    so the cost is about the sum of p_max · count, whatever count is. A validator with p_max <= 0 validates nothing."""
    validating = np.flatnonzero(p_max > 0.0) if count else np.empty(0, dtype=np.int64)
    owner, landed = skip_samples(keys[validating], p_max[validating], count)
    validator = validating[owner]
    _, within, _ = _runs(np.bincount(owner, minlength=len(validating)))
    thinning = stream_draws(keys[validator] ^ _THINNING_KEY, within)
    kept = thinning < _draw_thresholds(probability_at(validator, landed) / p_max[validator])
    return validator[kept], landed[kept]


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

    def index_of(self, ids: Sequence[str] | pl.Series) -> np.ndarray:
        """Positions of ids (a list or a polars column: a million executors need not become Python strings) in the
        pool, looked up in polars; a ValueError names the first id that is not in it."""
        column = ids if isinstance(ids, pl.Series) else pl.Series(ids, dtype=pl.String)
        positions = column.replace_strict(list(self.ids), range(len(self.ids)), default=None, return_dtype=pl.Int64)
        if positions.null_count():
            raise ValueError(f"executor {column.filter(positions.is_null())[0]!r} is not in the validator pool")
        return positions.to_numpy()


def select_validations(
    task_executors: Sequence[str] | pl.Series,
    pool: ValidatorPool,
    traffic: float,
    min_avg: MinAvg,
) -> tuple[np.ndarray, np.ndarray]:
    """The (task index, validator index) pairs drawn over the tasks these executors ran, sorted by task: each
    independently with P_v = min(1, target(rep_exec) · w_v / (W − w_exec)), never the executor itself (module
    docstring: skip-sampling). P_v = min(1, w_v · c_exec) with c_exec = target / (W − w_exec), so a validator's
    probabilities are one vector product and its draws cost about its validations."""
    weights = np.asarray(pool.weights, dtype=np.int64)
    total_weight = int(weights.sum())
    executors = pool.index_of(task_executors)
    targets = validation_target(traffic, np.asarray(pool.reputations), min_avg)
    per_weight = validation_probability(targets, 1, total_weight, weights)  # c_e, before the cap at 1
    task_rate = np.asarray(per_weight)[executors]
    keys = _hash_u64(pool.seeds)
    highest_rate = float(task_rate.max()) if len(task_rate) else 0.0

    def probability_at(validators: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return np.where(executors[positions] == validators, 0.0, np.minimum(1.0, weights[validators] * task_rate[positions]))

    validators, tasks = validators_draws(keys, np.minimum(1.0, weights * highest_rate), len(task_rate), probability_at)
    by_task = np.argsort(tasks * len(weights) + validators)  # one key per pair (a validator draws a task at most once)
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
    lp_o = _executor_logprobs(v_ids, e_ids, e_lp)
    terms = v_lp - lp_o  # |lp_v - lp_o| / (eps + |lp_v| + |lp_o|) / 2 with fewer temporaries: the same bits and types
    np.abs(terms, out=terms)
    terms /= (epsilon + np.abs(v_lp)) + np.abs(lp_o, out=lp_o)
    terms /= 2
    score = 1.0 - terms.reshape(outputs, positions * top_k).sum(axis=1) / (max(min_positions, positions) * top_k)
    return np.where(score > 0.0, score, 0.0)


def _executor_logprobs(v_ids: np.ndarray, e_ids: np.ndarray, e_lp: np.ndarray) -> np.ndarray:
    """lp_o of each of the validator's top-k tokens: the executor's log-prob of its first entry of that id, else
    m1 - (m2 - m1). One pass per executor entry over (outputs, positions, k) arrays rather than a (..., k, k) cube of
    matches reduced along its short last axis (about a third of judging a million outputs)."""
    smallest, second = _two_smallest(e_lp)
    lp_o = np.repeat((smallest - (second - smallest))[..., None], v_ids.shape[-1], axis=-1)
    for entry in reversed(range(e_ids.shape[-1])):  # the first matching entry is written last
        np.copyto(lp_o, e_lp[..., entry, None], where=v_ids == e_ids[..., entry, None])
    return lp_o


def _two_smallest(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two of each row of `values` sorted along its last axis (ties kept; NaN sorts last): running minima,
    or a sort where some value is NaN (untrusted log-probs)."""
    if np.isnan(values).any():
        ascending = np.sort(values, axis=-1)
        return ascending[..., 0], ascending[..., 1]
    first, second = np.minimum(values[..., 0], values[..., 1]), np.maximum(values[..., 0], values[..., 1])
    for entry in range(2, values.shape[-1]):
        column = values[..., entry]
        second = np.minimum(second, np.maximum(first, column))
        first = np.minimum(first, column)
    return first, second


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


_REASONS = np.array([ComparisonReason.SIMILAR.value, ComparisonReason.DISSIMILAR.value, ComparisonReason.TOKENS_DIFFER.value])
"""The reasons by _comparison.judge's codes."""


def judge_outputs(batch: OutputBatch, *, tie_tolerance: float, threshold: float, epsilon: float,
                  min_positions: int) -> Comparisons:
    """compare_batch(forced_choices(batch, tie_tolerance), batch, ...), the same bits in one pass per output in C
    (_comparison.judge: about a tenth of numpy's time on a million outputs) for int32 or int64 ids and float64
    log-probs, as the chain and the engines hold them; numpy, which also raises the errors, for any other batch
    (other types, which numpy computes in their own precision; no positions, no validator top-k, an executor top-k
    under 2, shapes that disagree)."""
    tokens, e_ids, e_lp, v_ids, v_lp = batch
    outputs, positions = tokens.shape if tokens.ndim == 2 else (0, 0)
    e_width, v_width = e_ids.shape[-1], v_ids.shape[-1]
    if (positions == 0 or v_width == 0 or e_width < 2 or e_ids.shape != e_lp.shape or v_ids.shape != v_lp.shape
            or e_ids.shape != (outputs, positions, e_width) or v_ids.shape != (outputs, positions, v_width)
            or any(ids.dtype not in (np.int32, np.int64) for ids in (tokens, e_ids, v_ids))
            or e_lp.dtype != np.float64 or v_lp.dtype != np.float64):
        return compare_batch(forced_choices(batch, tie_tolerance), batch, threshold=threshold, epsilon=epsilon,
                             min_positions=min_positions)
    passed, similarity, reason = np.empty(outputs, dtype=bool), np.empty(outputs), np.empty(outputs, dtype=np.int8)
    contiguous = OutputBatch(*map(np.ascontiguousarray, batch))
    _comparison.judge(contiguous.tokens, contiguous.executor_ids, contiguous.executor_logprobs, contiguous.validator_ids,
                      contiguous.validator_logprobs, outputs, positions, e_width, v_width, tie_tolerance, threshold, epsilon,
                      float(max(min_positions, positions) * v_width), passed, similarity, reason)
    return Comparisons(passed, similarity, _REASONS[reason])


# ---------------------------------------------------------------- fail vote


def invalidated(votes_invalid_weight: int, total_weight: int, quorum: float) -> bool:
    """A failed task is invalidated iff 'invalid' votes hold at least quorum (Gonka: 50 %) of all weight (exact)."""
    if total_weight <= 0:
        raise ValueError(f"total weight must be positive, got {total_weight}")
    if not 0 <= votes_invalid_weight <= total_weight:
        raise ValueError(f"invalid-vote weight {votes_invalid_weight} is outside [0, {total_weight}]")
    share = Fraction(str(quorum))
    return votes_invalid_weight * share.denominator >= total_weight * share.numerator
