"""Who validates (minAvg, target, P_v, the secret draw by skip-sampling), the log-prob comparison and the fail vote."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pytest

from gonka_pipelines.protocol import _comparison
from gonka_pipelines.protocol.inference_validation import (
    Comparison,
    ComparisonReason,
    MinAvg,
    OutputBatch,
    ValidatorPool,
    compare_batch,
    forced_choices,
    geometric_gaps,
    invalidated,
    judge_outputs,
    select_validations,
    similarities,
    similarity,
    stream_draws,
    validation_probability,
    validation_target,
)

MIN_AVG = MinAvg((100, 5000, 10_000), (1.0, 0.05, 0.01))
"""PROTOCOL.md section 4: minAvg(T) = 1.0 to T = 100, then 0.05 at 5000 and 0.01 from 10000."""
COMPARE = {"threshold": 0.98, "epsilon": 1e-6, "min_positions": 100}
"""PROTOCOL.md section 4: pass iff similarity > 0.98; |lp_v - lp_o| / (1e-6 + ...); distance over max(100, positions)."""
SIMILARITY = {"epsilon": 1e-6, "min_positions": 100}
QUORUM = 0.5
"""PROTOCOL.md section 4: invalid votes holding >= 50 % of the weight invalidate a task."""

# ---------------------------------------------------------------- minAvg, target, P_v


@pytest.mark.parametrize(
    ("traffic", "expected"),
    [
        (0, 1.0),
        (100, 1.0),
        (101, 0.05 + 0.95 * 4899 / 4900),
        (2550, 0.05 + 0.95 * 2450 / 4900),
        (4999, 0.05 + 0.95 * 1 / 4900),
        (5000, 0.05),
        (7500, 0.01 + 0.04 * 2500 / 5000),
        (9999, 0.01 + 0.04 * 1 / 5000),
        (10_000, 0.01),
        (1_000_000, 0.01),
    ],
)
def test_min_avg_follows_the_four_pieces(traffic, expected):
    assert MIN_AVG(traffic) == pytest.approx(expected, rel=1e-12)


def test_min_avg_is_vectorised():
    np.testing.assert_allclose(MIN_AVG(np.array([50, 5000, 20_000])), [1.0, 0.05, 0.01])


def test_target_runs_from_min_avg_at_full_reputation_to_one_at_zero():
    assert validation_target(5000, 100, MIN_AVG) == pytest.approx(0.05)
    assert validation_target(5000, 0, MIN_AVG) == pytest.approx(1.0)
    assert validation_target(5000, 50, MIN_AVG) == pytest.approx(0.05 + 0.95 * 0.5)
    assert validation_target(50, 100, MIN_AVG) == pytest.approx(1.0)


def test_probability_is_weight_share_of_the_others_capped_at_one():
    assert validation_probability(0.5, 10, 100, 20) == pytest.approx(0.5 * 10 / 80)
    assert validation_probability(1.0, 90, 100, 10) == 1.0
    assert validation_probability(1.0, 0, 100, 100) == 0.0


# ---------------------------------------------------------------- the draw

MASK = (1 << 64) - 1


def reference_stream(key: int, i: int) -> int:
    """SplitMix64 of key + i · golden ratio, top 53 bits, in Python integers."""
    z = (key + i * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return (z ^ (z >> 31)) >> 11


def reference_gap(draw: int, p: float, limit: int) -> int:
    """The largest g with (1 - p)^g > u, u = (draw + 1) / 2^53, by the same squarings in Python floats."""
    u, powers = (draw + 1) / 2.0**53, [1.0 - p]
    for _ in range(max(1, limit.bit_length())):
        powers.append(powers[-1] * powers[-1])
    gap, reached = 0, 1.0
    for bit in range(len(powers) - 1, -1, -1):
        if reached * powers[bit] > u:
            reached, gap = reached * powers[bit], gap + (1 << bit)
    return gap


def reference_pairs(task_executors: list[str], pool: ValidatorPool, traffic: float) -> set[tuple[int, int]]:
    """The definition, one task at a time: validator v walks the tasks with geometric gaps of p_max = min(1, w_v · max c)
    from its stream and keeps a landing t with draw < ceil(P_v(t) / p_max · 2^53) from its thinning stream."""
    weights = np.array(pool.weights)
    total = int(weights.sum())
    rate = [float(validation_probability(validation_target(traffic, pool.reputations[pool.ids.index(e)], MIN_AVG), 1, total,
                                         weights[pool.ids.index(e)])) for e in task_executors]
    pairs = set()
    for v, (seed, weight) in enumerate(zip(pool.seeds, pool.weights)):
        key = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
        p_max = min(1.0, weight * max(rate))
        if p_max <= 0:
            continue
        position, i, landed = -1, 0, []
        while True:
            position += reference_gap(reference_stream(key, i), p_max, len(rate)) + 1
            i += 1
            if position >= len(rate):
                break
            landed.append(position)
        for j, t in enumerate(landed):
            p = 0.0 if task_executors[t] == pool.ids[v] else min(1.0, weight * rate[t])
            if reference_stream(key ^ 0xD1B54A32D192ED03, j) < int(np.ceil(p / p_max * 2.0**53)):
                pairs.add((t, v))
    return pairs


def test_the_stream_is_splitmix64_in_counter_form():
    assert stream_draws(np.uint64(12345), np.arange(7, 10)).tolist() == [reference_stream(12345, i) for i in (7, 8, 9)]
    assert stream_draws(np.uint64(12345), np.arange(10))[7:].tolist() == stream_draws(np.uint64(12345), np.arange(7, 10)).tolist(), \
        "any stretch on its own"
    keys, counters = np.array([12345, 99, 12345], dtype=np.uint64), np.array([8, 0, 7])
    assert stream_draws(keys, counters).tolist() == [reference_stream(12345, 8), reference_stream(99, 0),
                                                     reference_stream(12345, 7)], "many streams at once"


@pytest.mark.parametrize("p", [1.0, 0.5, 0.1, 0.01, 0.001])
def test_gaps_are_geometric(p):
    draws = stream_draws(np.uint64(99), np.arange(200_000))
    gaps = geometric_gaps(draws, p, 10**6)
    assert gaps[:50].tolist() == [reference_gap(d, p, 10**6) for d in draws[:50].tolist()]
    mean = (1 - p) / p
    assert abs(gaps.mean() - mean) < 5 * ((1 - p) / p**2 / len(gaps)) ** 0.5 + 1e-12
    assert np.mean(gaps == 0) == pytest.approx(p, abs=5 * (p * (1 - p) / len(gaps)) ** 0.5 + 1e-12)


def test_gaps_of_streams_are_the_gaps_of_each_draws_own_probability():
    """Squares made per stream and gathered (`of`) give the gaps, bit for bit, of the same probabilities laid out per
    draw: skip-sampling hands each draw its stream's p this way."""
    rng = np.random.default_rng(5)
    p = np.concatenate([rng.uniform(1e-5, 0.3, 40), [1.0, 0.5, 1e-9]])
    of = rng.integers(0, len(p), 50_000)
    draws = stream_draws(np.uint64(7), np.arange(len(of)))
    assert geometric_gaps(draws, p, 10**6, of=of).tolist() == geometric_gaps(draws, p[of], 10**6).tolist()


def _pool(n_hosts: int, seed: int = 0) -> ValidatorPool:
    rng = np.random.default_rng(seed)
    ids = [f"host{i}" for i in range(n_hosts)]
    weights = rng.integers(0, 50, n_hosts).tolist()
    return ValidatorPool(ids, [f"secret-{i}" for i in ids], weights, rng.integers(0, 101, n_hosts).tolist())


def test_select_validations_matches_the_definition_walked_one_task_at_a_time():
    pool = _pool(9)
    executors = [pool.ids[i % 9] for i in range(300)]
    task_index, validator_index = select_validations(executors, pool, 600, MIN_AVG)
    assert set(zip(task_index.tolist(), validator_index.tolist())) == reference_pairs(executors, pool, 600)
    assert (np.diff(task_index) >= 0).all()
    as_column = select_validations(pl.Series(executors), pool, 600, MIN_AVG)
    assert [part.tolist() for part in as_column] == [task_index.tolist(), validator_index.tolist()], "a polars column draws the same"


def test_draws_that_take_several_batches_per_validator_are_the_same_pairs(monkeypatch):
    """With batches cut to the expected landings plus one draw, most validators need more rounds: the pairs do not change."""
    from gonka_pipelines.protocol import inference_validation

    pool = _pool(9)
    executors = [pool.ids[i % 9] for i in range(300)]
    monkeypatch.setattr(inference_validation, "BATCH_SIGMAS", 0.0)
    monkeypatch.setattr(inference_validation, "BATCH_SLACK", 1)
    task_index, validator_index = select_validations(executors, pool, 600, MIN_AVG)
    assert set(zip(task_index.tolist(), validator_index.tolist())) == reference_pairs(executors, pool, 600)


def test_every_pair_is_drawn_independently_with_its_probability():
    """Over 60 epochs (fresh seeds), each (validator, executor) cell's count matches P_v(e) × its tasks within 4.5
    standard errors, and two validators land on the same task as often as independence says (P1 · P2)."""
    pool = _pool(12, seed=3)
    executors = [pool.ids[i % 12] for i in range(3000)]
    weights, total = np.array(pool.weights), sum(pool.weights)
    counts, together, rounds = np.zeros((12, 12)), 0, 60
    a, b = int(np.argmax(weights)), int(np.argsort(weights)[-2])
    for r in range(rounds):
        epoch_pool = ValidatorPool(pool.ids, [f"epoch{r}-{s}" for s in pool.seeds], pool.weights, pool.reputations)
        tasks, validators = select_validations(executors, epoch_pool, 600, MIN_AVG)
        np.add.at(counts, (validators, tasks % 12), 1)
        chosen = {(t, v) for t, v in zip(tasks.tolist(), validators.tolist())}
        together += sum((t, a) in chosen and (t, b) in chosen for t in range(3000) if t % 12 not in (a, b))
    rate = np.array([validation_probability(validation_target(600, pool.reputations[e], MIN_AVG), 1, total, weights[e])
                     for e in range(12)])
    p = np.minimum(1.0, weights[:, None] * rate[None, :])
    np.fill_diagonal(p, 0.0)
    expected = p * (3000 / 12) * rounds
    assert counts.diagonal().sum() == 0
    spread = np.sqrt(np.maximum(expected * (1 - p), 1e-12))
    assert (np.abs(counts - expected) <= 4.5 * spread + 1e-9).all()
    both = sum(p[a, e] * p[b, e] * (3000 / 12) * rounds for e in range(12) if e not in (a, b))
    assert abs(together - both) < 4.5 * both**0.5


def test_an_executor_never_validates_itself_even_at_probability_one():
    pool = ValidatorPool(["a", "b"], ["sa", "sb"], [10, 10], [0, 0])
    tasks, validators = select_validations(["a", "b"], pool, 50, MIN_AVG)
    assert tasks.tolist() == [0, 1] and validators.tolist() == [1, 0]


def test_each_task_gets_about_target_validations():
    pool = ValidatorPool([f"h{i}" for i in range(50)], [f"s{i}" for i in range(50)], [10] * 50, [0] * 50)
    executors = [pool.ids[i % 50] for i in range(20_000)]
    task_index, _ = select_validations(executors, pool, 20_000, MIN_AVG)
    assert len(task_index) / len(executors) == pytest.approx(validation_target(20_000, 0, MIN_AVG), rel=0.05)


def test_unknown_executors_and_ragged_pools_are_refused():
    pool = _pool(3)
    with pytest.raises(ValueError, match="nobody"):
        select_validations(["nobody"], pool, 10, MIN_AVG)
    with pytest.raises(ValueError, match="'nobody' is not in the validator pool"):
        select_validations(pl.Series([pool.ids[0], "nobody", None]), pool, 10, MIN_AVG)
    with pytest.raises(ValueError, match="None is not in the validator pool"):
        select_validations(pl.Series([pool.ids[0], None]), pool, 10, MIN_AVG)
    with pytest.raises(ValueError):
        ValidatorPool(["a", "b"], ["s"], [1, 1], [0, 0])


def test_ten_million_pairs_give_about_target_validations_per_task():
    """Σ_v P_v = target for every task (when no P_v is capped at 1), so 10,000 tasks at T = 10,000 and full
    reputation (target = minAvg = 0.01) draw about 100 validations among 1,000 validators."""
    pool = ValidatorPool([f"host{i}" for i in range(1000)], [f"secret-{i}" for i in range(1000)], [10] * 1000, [100] * 1000)
    executors = [pool.ids[i % 1000] for i in range(10_000)]
    task_index, validator_index = select_validations(executors, pool, 10_000, MIN_AVG)
    assert abs(len(task_index) - 100) < 5 * 100**0.5
    assert all(pool.ids[v] != executors[t] for t, v in zip(task_index.tolist(), validator_index.tolist()))


# ---------------------------------------------------------------- comparison

IDS = [[1, 2, 3, 4, 5]]
LPS = [[-0.1, -1.0, -2.0, -3.0, -4.0]]


def test_identical_log_probs_are_fully_similar():
    assert similarity(IDS, LPS, IDS, LPS, **SIMILARITY) == 1.0


def test_one_differing_log_prob_costs_its_term_over_100_positions_times_5():
    executor = [[-0.2, -1.0, -2.0, -3.0, -4.0]]
    term = 0.1 / (1e-6 + 0.1 + 0.2) / 2
    assert similarity(IDS, LPS, IDS, executor, **SIMILARITY) == pytest.approx(1 - term / 500, rel=1e-12)


def test_a_token_missing_from_the_executor_gets_the_extrapolated_log_prob():
    executor_ids = [[1, 2, 3, 4, 9]]
    executor_lps = [[-0.1, -1.0, -2.0, -3.0, -5.0]]  # m1 = -5, m2 = -3: token 5 gets -5 - 2 = -7
    term = abs(-4.0 - -7.0) / (1e-6 + 4.0 + 7.0) / 2
    assert similarity(IDS, LPS, executor_ids, executor_lps, **SIMILARITY) == pytest.approx(1 - term / 500, rel=1e-12)


def test_order_within_the_top_k_does_not_matter():
    assert similarity(IDS, LPS, [[5, 4, 3, 2, 1]], [[-4.0, -3.0, -2.0, -1.0, -0.1]], **SIMILARITY) == 1.0


def test_long_outputs_normalise_by_their_own_length():
    ids, lps = IDS * 200, LPS * 200
    executor = [[-0.2, -1.0, -2.0, -3.0, -4.0]] + LPS * 199
    term = 0.1 / (1e-6 + 0.1 + 0.2) / 2
    assert similarity(ids, lps, ids, executor, **SIMILARITY) == pytest.approx(1 - term / (200 * 5), rel=1e-12)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        similarity(IDS, LPS, IDS * 2, LPS * 2, **SIMILARITY)


def compare(validator_tokens: list[int], executor_tokens: list[int], executor_lps: list[list[float]], **settings) -> Comparison:
    """compare_batch of one output whose top-k ids are IDS at every position (the validator's log-probs LPS)."""
    positions = len(executor_tokens)
    batch = OutputBatch.of_one(executor_tokens, IDS * positions, executor_lps, IDS * positions, LPS * positions)
    return compare_batch(np.array([validator_tokens]), batch, **settings).one(0)


def test_compare_fails_other_tokens_before_looking_at_log_probs():
    assert compare([8], [7], LPS, **COMPARE) == (False, 0.0, ComparisonReason.TOKENS_DIFFER)
    assert compare([7, 8], [7, 9], LPS * 2, **COMPARE) == (False, 0.0, ComparisonReason.TOKENS_DIFFER)


def test_compare_passes_strictly_above_the_threshold():
    executor = [[-0.2, -1.0, -2.0, -3.0, -4.0]]
    score = similarity(IDS, LPS, IDS, executor, **SIMILARITY)
    assert compare([7], [7], executor, **COMPARE) == (True, score, ComparisonReason.SIMILAR)
    assert compare([7], [7], executor, threshold=score, **SIMILARITY) == (False, score, ComparisonReason.DISSIMILAR)
    assert compare([7], [7], executor, threshold=np.nextafter(score, 0), **SIMILARITY).passed


def test_a_garbled_output_fails_the_protocol_threshold():
    wrong = [[-5.0, -0.1, -0.2, -0.3, -0.4]] * 20
    passed, score, reason = compare(list(range(20)), list(range(20)), wrong, **COMPARE)
    assert not passed and score < 0.98 and reason is ComparisonReason.DISSIMILAR


def reference_similarity(v_ids, v_lp, e_ids, e_lp, epsilon: float, min_positions: int) -> float:
    """The similarity as it was computed one output at a time (before batches), kept to pin the batch's floats."""
    v_ids, e_ids, v_lp, e_lp = np.asarray(v_ids), np.asarray(e_ids), np.asarray(v_lp, np.float64), np.asarray(e_lp, np.float64)
    positions, top_k = v_ids.shape
    matches = v_ids[:, :, None] == e_ids[:, None, :]
    matched = np.take_along_axis(e_lp, matches.argmax(axis=2), axis=1)
    ascending = np.sort(e_lp, axis=1)
    lp_o = np.where(matches.any(axis=2), matched, (ascending[:, 0] - (ascending[:, 1] - ascending[:, 0]))[:, None])
    terms = np.abs(v_lp - lp_o) / (epsilon + np.abs(v_lp) + np.abs(lp_o)) / 2
    return max(0.0, 1.0 - float(terms.sum()) / (max(min_positions, positions) * top_k))


def reference_choice(token: int, ids: list[int], logprobs: list[float], tolerance: float) -> int:
    own = dict(zip(ids, logprobs)).get(token)
    return token if own is not None and own >= logprobs[0] - tolerance else ids[0]


@pytest.mark.parametrize("positions", [1, 7, 26, 130])
def test_a_batch_judges_each_output_bit_for_bit_as_one_at_a_time(positions: int):
    """similarities and forced_choices over a batch equal the per-output computation exactly (the sums too: blocks
    commit these floats), with near-ties, shared and missing ids, and long outputs past numpy's pairwise blocks."""
    rng = np.random.default_rng(positions)
    outputs = 40
    e_ids = np.stack([np.stack([rng.permutation(12)[:5] for _ in range(positions)]) for _ in range(outputs)])
    v_ids = np.where(rng.random((outputs, positions, 5)) < 0.7, e_ids, rng.integers(12, 20, (outputs, positions, 5)))
    e_lp = np.sort(-rng.exponential(2.0, (outputs, positions, 5)), axis=-1)[..., ::-1]
    v_lp = np.where(rng.random((outputs, positions, 5)) < 0.5, e_lp, e_lp + rng.normal(0, 0.3, (outputs, positions, 5)))
    v_lp[..., 1] = np.where(rng.random((outputs, positions)) < 0.2, v_lp[..., 0] - 5e-5, v_lp[..., 1])  # near-ties
    tokens = np.where(rng.random((outputs, positions)) < 0.5, v_ids[..., 0], v_ids[..., 1])
    batch = OutputBatch(tokens, e_ids, e_lp, v_ids, v_lp)
    scores = similarities(batch, **SIMILARITY)
    choices = forced_choices(batch, 1e-4)
    for i in range(outputs):
        assert scores[i] == reference_similarity(v_ids[i], v_lp[i], e_ids[i], e_lp[i], **SIMILARITY)
        assert choices[i].tolist() == [reference_choice(t, ids, lps, 1e-4) for t, ids, lps in
                                       zip(tokens[i].tolist(), v_ids[i].tolist(), v_lp[i].tolist())]
    judged = compare_batch(choices, batch, **COMPARE)
    assert judged.passed.tolist() == [bool((choices[i] == tokens[i]).all() and scores[i] > 0.98) for i in range(outputs)]



def test_untrusted_executor_rows_are_judged_bit_for_bit_as_the_reference():
    """An executor's top-k is untrusted: NaN and infinite log-probs, ties at its two smallest, an id listed twice (its
    first entry counts) and signed zeros are judged exactly as reference_similarity judges them, one output at a time."""
    rng = np.random.default_rng(11)
    outputs, positions = 400, 6
    e_ids = rng.integers(0, 7, (outputs, positions, 5))  # repeated ids within a row are common
    v_ids = rng.integers(0, 9, (outputs, positions, 5))
    e_lp = -rng.exponential(2.0, (outputs, positions, 5))
    v_lp = -rng.exponential(2.0, (outputs, positions, 5))
    odd = rng.random((outputs, positions, 5))
    e_lp = np.where(odd < 0.02, np.nan, np.where(odd < 0.04, -np.inf, np.where(odd < 0.05, np.inf, e_lp)))
    e_lp = np.where((odd > 0.5) & (odd < 0.55), -0.0, np.where((odd > 0.55) & (odd < 0.6), 0.0, e_lp))
    ties = rng.random((outputs, positions)) < 0.2
    e_lp[..., 4] = np.where(ties, e_lp[..., 3], e_lp[..., 4])
    batch = OutputBatch(v_ids[..., 0], e_ids.astype(np.int32), e_lp, v_ids, v_lp)  # as stored: int32 beside int64 re-runs
    copies = [array.copy() for array in batch]
    scores = similarities(batch, **SIMILARITY)
    assert np.isnan(e_lp).any(axis=(1, 2)).sum() > 100 and ties.any()
    for i in range(outputs):
        assert scores[i] == reference_similarity(v_ids[i], v_lp[i], e_ids[i], e_lp[i], **SIMILARITY)
    clean = ~np.isnan(e_lp).any(axis=(1, 2))  # without NaN the running minima stand in for the sort
    assert similarities(OutputBatch(*(array[clean] for array in batch)), **SIMILARITY).tolist() == scores[clean].tolist()
    for array, copy in zip(batch, copies):
        np.testing.assert_array_equal(array, copy)  # the caller's arrays are read, never written


def _numpy_judged(batch: OutputBatch, tie_tolerance: float) -> tuple[list, list, list]:
    """compare_batch over forced_choices (the numpy definition), as lists with the similarities' bits."""
    judged = compare_batch(forced_choices(batch, tie_tolerance), batch, **COMPARE)
    return judged.passed.tolist(), judged.similarity.view(np.int64).tolist(), judged.reason.tolist()


def _random_batch(seed: int) -> OutputBatch:
    """Outputs of random shape and content: ids shared or not, top-k widths from 1 (re-run) and 2 (executor) to 6,
    near-ties, NaN and infinite log-probs, signed zeros, and rows past numpy's pairwise blocks (128 and 8,192 terms)."""
    rng = np.random.default_rng(seed)
    outputs, positions = int(rng.integers(1, 40)), int(rng.choice([1, 2, 7, 8, 13, 26, 40, 130, 300, 1700]))
    v_width, e_width = int(rng.integers(1, 7)), int(rng.integers(2, 7))
    shared = min(v_width, e_width)
    e_ids = rng.integers(0, int(rng.integers(2, 12)), (outputs, positions, e_width))
    v_ids = rng.integers(0, 12, (outputs, positions, v_width))
    e_lp, v_lp = -rng.exponential(2.0, e_ids.shape), -rng.exponential(2.0, v_ids.shape)
    if seed % 2:  # re-runs that mostly agree: the similarity decides
        v_ids[..., :shared] = e_ids[..., :shared]
        v_lp[..., :shared] = e_lp[..., :shared] + (rng.normal(0, 1e-3, (outputs, positions, shared)) if seed % 4 == 1 else 0)
    if v_width > 1:
        v_lp[..., 1] = np.where(rng.random((outputs, positions)) < 0.2, v_lp[..., 0] - 5e-5, v_lp[..., 1])  # near-ties
    if seed % 3 == 0:  # untrusted log-probs
        odd = rng.random(e_lp.shape)
        e_lp = np.where(odd < 0.02, np.nan, np.where(odd < 0.04, -np.inf, np.where(odd < 0.05, np.inf, e_lp)))
        e_lp = np.where((odd > 0.5) & (odd < 0.55), -0.0, np.where((odd > 0.55) & (odd < 0.6), 0.0, e_lp))
        v_lp = np.where(rng.random(v_lp.shape) < 0.03, np.nan, v_lp)
    tokens = np.where(rng.random((outputs, positions)) < 0.95, v_ids[..., 0], rng.integers(0, 12, (outputs, positions)))
    return OutputBatch(tokens, e_ids, e_lp, v_ids, v_lp)


@pytest.mark.parametrize("seed", range(60))
def test_judged_in_c_bit_for_bit_as_the_numpy_definition(seed: int):
    """judge_outputs (C) gives compare_batch(forced_choices(...)) exactly: verdicts, reasons and the similarities' bits,
    over random shapes, int32 (as stored) and int64 ids, and untrusted log-probs."""
    batch = _random_batch(seed)
    with np.errstate(invalid="ignore"):
        expected = _numpy_judged(batch, 1e-4)
    for ids in (np.int64, np.int32):
        typed = OutputBatch(batch.tokens.astype(ids), batch.executor_ids.astype(ids), batch.executor_logprobs,
                            batch.validator_ids.astype(ids), batch.validator_logprobs)
        judged = judge_outputs(typed, tie_tolerance=1e-4, **COMPARE)
        assert (judged.passed.tolist(), judged.similarity.view(np.int64).tolist(), judged.reason.tolist()) == expected
    assert set(expected[2]) <= {reason.value for reason in ComparisonReason}


def test_judged_in_c_covers_every_verdict():
    """One batch holding a pass, a dissimilar re-run and a token the re-run does not choose, judged in C."""
    ids = np.array([[[1, 2, 3]]] * 3)
    e_lp = np.array([[[-0.1, -2.0, -3.0]]] * 3)
    v_lp = e_lp.copy()
    v_lp[1] = [[-0.1, -0.2, -9.0]]  # far from the executor's: dissimilar
    tokens = np.array([[1], [1], [3]])  # the third re-run ranks token 3 far below its best: tokens differ
    judged = judge_outputs(OutputBatch(tokens, ids, e_lp, ids, v_lp), tie_tolerance=1e-4, threshold=0.98, epsilon=1e-6,
                           min_positions=1)
    assert judged.passed.tolist() == [True, False, False]
    assert judged.reason.tolist() == ["similar", "dissimilar", "tokens_differ"]
    assert judged.similarity[0] == 1.0 and 0 < judged.similarity[1] < 0.98 and judged.similarity[2] == 0.0


def test_batches_c_does_not_take_go_to_numpy_and_its_errors():
    """An executor reporting fewer than 2 log-probs gets numpy's error; outputs without positions numpy's verdicts."""
    ids, lps = np.zeros((2, 3, 1), dtype=np.int64), np.zeros((2, 3, 1))
    with pytest.raises(ValueError, match="at least its top-2"):
        judge_outputs(OutputBatch(np.zeros((2, 3), dtype=np.int64), ids, lps, ids, lps), tie_tolerance=1e-4, **COMPARE)
    empty = OutputBatch(np.zeros((2, 0), dtype=np.int64), *(np.zeros((2, 0, 5)),) * 4)
    assert judge_outputs(empty, tie_tolerance=1e-4, **COMPARE).passed.tolist() == [True, True]


def test_batches_of_other_types_are_judged_by_numpy_in_their_own_types():
    """float32 log-probs, float or uint64 ids: numpy's verdicts (in the arrays' own precision and comparisons), not C's
    after a cast (float32 similarities would differ in their last bits; a token 1.5 would match an id 1)."""
    batch = _random_batch(1)
    for typed in (batch._replace(executor_logprobs=batch.executor_logprobs.astype(np.float32),
                                 validator_logprobs=batch.validator_logprobs.astype(np.float32)),
                  batch._replace(tokens=batch.tokens + 0.5), batch._replace(tokens=batch.tokens.astype(np.uint64))):
        judged = judge_outputs(typed, tie_tolerance=1e-4, **COMPARE)
        expected = compare_batch(forced_choices(typed, 1e-4), typed, **COMPARE)
        assert judged.passed.tolist() == expected.passed.tolist() and judged.reason.tolist() == expected.reason.tolist()
        assert judged.similarity.dtype == expected.similarity.dtype and judged.similarity.tobytes() == expected.similarity.tobytes()
    assert set(judge_outputs(batch._replace(tokens=batch.tokens + 0.5), tie_tolerance=1e-4, **COMPARE).reason) == {"tokens_differ"}


def test_c_judge_refuses_buffers_of_the_wrong_size():
    """_comparison.judge names the argument whose buffer does not hold the batch it is told of."""
    tokens, ids, lps = np.zeros((2, 3), np.int32), np.zeros((2, 3, 5), np.int32), np.zeros((2, 3, 5))
    out = (np.empty(2, bool), np.empty(2), np.empty(2, np.int8))
    _comparison.judge(tokens, ids, lps, ids, lps, 2, 3, 5, 5, 1e-4, 0.98, 1e-6, 15.0, *out)
    with pytest.raises(ValueError, match="v_lp holds 192 bytes, not 30 float64 values"):
        _comparison.judge(tokens, ids, lps, ids, lps[:, :, :4].copy(), 2, 3, 5, 5, 1e-4, 0.98, 1e-6, 15.0, *out)
    with pytest.raises(ValueError, match="tokens holds"):
        _comparison.judge(tokens.astype(np.int16), ids, lps, ids, lps, 2, 3, 5, 5, 1e-4, 0.98, 1e-6, 15.0, *out)
    with pytest.raises(ValueError, match="e_width >= 2"):
        _comparison.judge(tokens, ids, lps, ids, lps, 2, 3, 1, 5, 1e-4, 0.98, 1e-6, 15.0, *out)
    with pytest.raises(OverflowError):
        _comparison.judge(tokens, ids, lps, ids, lps, 2**40, 2**40, 5, 5, 1e-4, 0.98, 1e-6, 15.0, *out)


# ---------------------------------------------------------------- fail vote


@pytest.mark.parametrize(("invalid", "total", "expected"), [(50, 100, True), (49, 100, False), (1, 2, True), (0, 1, False)])
def test_half_the_weight_invalidates(invalid, total, expected):
    assert invalidated(invalid, total, QUORUM) is expected


def test_quorum_is_a_parameter_and_bad_votes_are_refused():
    assert not invalidated(60, 100, quorum=2 / 3)
    assert invalidated(67, 100, quorum=2 / 3)
    with pytest.raises(ValueError):
        invalidated(101, 100, QUORUM)
    with pytest.raises(ValueError):
        invalidated(0, 0, QUORUM)
