"""Sprint math against PROTOCOL.md section 3: nonce scoring, calibration, fraud test, acceptance, weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.compute.runner import ModelRunner
from gonka_pipelines.compute import sprint as poc
from gonka_pipelines.protocol import sprint

TINY = load_profile("poc-tiny")
BLOCK = "9f" * 32
HOST = "a1" * 32
MAINNET_R_TARGET = 1.4013564660458173
CALIBRATION_NONCES = 8192


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return ModelRunner(TINY, bytes.fromhex(BLOCK), device="cpu")


@pytest.fixture(scope="module")
def distances(runner: ModelRunner) -> np.ndarray:
    return poc.compute_distances(runner, BLOCK, HOST, range(CALIBRATION_NONCES))


def splitmix64_reference(z: int) -> int:
    mask = 2**64 - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


# --- the counter-based generator ----------------------------------------------------------------


def test_mix64_is_splitmix64_with_wrapping_int64_arithmetic() -> None:
    words = [0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0x0123456789ABCDEF]
    signed = torch.tensor([w - 2**64 if w >= 2**63 else w for w in words], dtype=torch.int64)
    assert [v % 2**64 for v in poc.mix64(signed).tolist()] == [splitmix64_reference(w) for w in words]


def test_nonce_inputs_are_standard_normal_and_keyed_by_block_host_and_nonce() -> None:
    x = poc.nonce_inputs(TINY, BLOCK, HOST, range(64), "cpu")
    assert x.shape == (64, TINY.seq_len, TINY.dim) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.01 and x.std().item() == pytest.approx(1.0, abs=0.01)
    assert ((x**4).mean() / (x**2).mean() ** 2).item() == pytest.approx(3.0, abs=0.05)  # normal kurtosis
    assert torch.equal(poc.nonce_inputs(TINY, BLOCK, HOST, [37], "cpu")[0], x[37])
    for other in ((TINY, "00" * 32, HOST, [37]), (TINY, BLOCK, "b2" * 32, [37]), (TINY, BLOCK, HOST, [38])):
        assert not torch.equal(poc.nonce_inputs(*other, "cpu")[0], x[37])


@pytest.mark.parametrize("vocab", [1024, 8196, 260])
def test_nonce_permutations_are_bijections_that_differ_per_nonce(vocab: int) -> None:
    perms = poc.nonce_permutations(vocab, BLOCK, HOST, range(32), "cpu")
    assert torch.equal(perms.sort(dim=1).values, torch.arange(vocab).expand(32, vocab))
    assert len({tuple(row.tolist()) for row in perms}) == 32
    assert torch.equal(poc.nonce_permutations(vocab, BLOCK, HOST, [5], "cpu")[0], perms[5])


def test_target_is_a_unit_vector_keyed_by_the_block_hash_alone() -> None:
    target = poc.target_vector(BLOCK, TINY.vocab)
    assert target.shape == (TINY.vocab,) and torch.linalg.vector_norm(target).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(target, poc.target_vector(BLOCK, TINY.vocab))
    assert not torch.equal(target, poc.target_vector("00" * 32, TINY.vocab))


# --- distances and mining -----------------------------------------------------------------------


def test_a_nonce_recomputed_alone_has_the_bit_identical_distance(runner: ModelRunner, distances: np.ndarray) -> None:
    for nonce in (0, 1, 127, 128, 4095, CALIBRATION_NONCES - 1):
        assert poc.compute_distances(runner, BLOCK, HOST, [nonce])[0] == distances[nonce]
    sampled = [8000, 3, 129, 4000]
    assert poc.compute_distances(runner, BLOCK, HOST, sampled).tolist() == distances[sampled].tolist()


def test_a_rebuilt_model_gives_the_same_distances(distances: np.ndarray) -> None:
    rebuilt = ModelRunner(TINY, bytes.fromhex(BLOCK), device="cpu")
    assert poc.compute_distances(rebuilt, BLOCK, HOST, range(256)).tolist() == distances[:256].tolist()


def test_distances_spread_around_sqrt2_like_random_directions(distances: np.ndarray) -> None:
    assert distances.dtype == np.float64
    assert distances.mean() == pytest.approx(math.sqrt(2), abs=1e-3)
    assert distances.std() == pytest.approx(1 / math.sqrt(2 * TINY.vocab), rel=0.05)  # sd of sqrt(2 - 2 cos)


def test_mine_keeps_exactly_the_hits(runner: ModelRunner, distances: np.ndarray) -> None:
    r_target = sprint.calibrate_r_target(TINY.vocab, 0.05)
    nonces, hit_distances = poc.mine(runner, BLOCK, HOST, 100, 300, r_target)
    expected = [n for n in range(100, 400) if distances[n] < r_target]
    assert nonces == expected and len(expected) > 0
    assert hit_distances == distances[expected].tolist()
    assert poc.mine(runner, BLOCK, HOST, 0, 0, r_target) == ([], [])
    with pytest.raises(ValueError, match="nonce range"):
        poc.mine(runner, BLOCK, HOST, -1, 10, r_target)


def test_nonces_outside_int64_range_are_refused(runner: ModelRunner) -> None:
    with pytest.raises(ValueError, match=r"nonces must be integers in \[0, 2\*\*63\), got -1"):
        poc.compute_distances(runner, BLOCK, HOST, [3, -1])
    with pytest.raises(ValueError, match="nonces must be integers"):
        poc.compute_distances(runner, BLOCK, HOST, [2**64])
    assert poc.compute_distances(runner, BLOCK, HOST, []).shape == (0,)
    as_array = poc.compute_distances(runner, BLOCK, HOST, np.array([5, 9]))
    assert as_array.tolist() == poc.compute_distances(runner, BLOCK, HOST, [5, 9]).tolist()


# --- calibration --------------------------------------------------------------------------------


@pytest.mark.parametrize("hit_rate", [0.05, 0.01])
def test_calibrated_r_target_gives_the_wanted_hit_rate(distances: np.ndarray, hit_rate: float) -> None:
    r_target = sprint.calibrate_r_target(TINY.vocab, hit_rate)
    measured = float(np.mean(distances < r_target))
    sigma = math.sqrt(hit_rate * (1 - hit_rate) / CALIBRATION_NONCES)
    assert abs(measured - hit_rate) < 4.5 * sigma  # a wrong formula would be off by far more


def test_calibration_reproduces_gonka_mainnet_r_target() -> None:
    implied = sprint.hit_probability(8196, MAINNET_R_TARGET)
    assert implied == pytest.approx(0.0506, abs=1e-4)  # mainnet's r_target means about one hit in 20 nonces
    assert sprint.calibrate_r_target(8196, implied) == pytest.approx(MAINNET_R_TARGET, abs=1e-12)


def test_calibration_is_monotone_and_refuses_impossible_rates() -> None:
    radii = [sprint.calibrate_r_target(1024, rate) for rate in (0.001, 0.01, 0.05, 0.5, 0.9)]
    assert radii == sorted(radii) and radii[3] == pytest.approx(math.sqrt(2))
    for rate in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="hit_rate"):
            sprint.calibrate_r_target(1024, rate)


# --- validation ---------------------------------------------------------------------------------


def test_sample_is_deterministic_sized_and_independent_of_listing_order() -> None:
    nonces = list(range(1000, 1500))
    sample = sprint.sample_nonces("v1", BLOCK, 7, nonces)
    assert len(sample) == 200 and len(set(sample)) == 200 and set(sample) <= set(nonces)
    assert sample == sorted(sample) == sprint.sample_nonces("v1", BLOCK, 7, nonces[::-1])
    assert sample != sprint.sample_nonces("v2", BLOCK, 7, nonces)
    assert sample != sprint.sample_nonces("v1", BLOCK, 8, nonces)
    assert sample != sprint.sample_nonces("v1", "00" * 32, 7, nonces)
    assert sprint.sample_nonces("v1", BLOCK, 7, nonces[:50]) == nonces[:50]
    assert len(sprint.sample_nonces("v1", BLOCK, 7, nonces, n_max=10)) == 10
    assert sprint.sample_nonces("v1", BLOCK, 7, []) == []


def test_binomial_tail_is_exact() -> None:
    n, p = 10, 0.3
    for k in range(n + 2):
        exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert sprint.binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-12, abs=1e-300)
    assert sprint.binomial_tail(0, 200, 5e-4) == 1.0
    assert sprint.binomial_tail(201, 200, 5e-4) == 0.0
    assert sprint.binomial_tail(200, 200, 5e-4) == pytest.approx(5e-4**200, rel=1e-9)


def test_five_mismatches_in_200_is_the_first_fraud() -> None:
    assert sprint.binomial_tail(5, 200, 5e-4) < 1e-7 < sprint.binomial_tail(4, 200, 5e-4)
    assert [sprint.is_fraud(k, 200) for k in range(7)] == [False] * 5 + [True] * 2
    assert not sprint.is_fraud(0, 0)


def test_mismatches_count_recomputed_distances_not_below_r_target() -> None:
    assert sprint.count_mismatches([1.30, 1.39, 1.40, 1.41], 1.40) == 2
    assert sprint.count_mismatches(np.array([]), 1.4) == 0


def test_acceptance_needs_more_than_half_of_the_weight() -> None:
    assert not sprint.sprint_accepted(5, 10) and sprint.sprint_accepted(6, 10)
    assert not sprint.sprint_accepted(5, 11) and sprint.sprint_accepted(6, 11)
    assert not sprint.sprint_accepted(0, 0)


# --- weights ------------------------------------------------------------------------------------


def test_cap_fraction_is_raised_for_small_networks() -> None:
    assert [sprint.cap_fraction(n, 0.25) for n in (1, 2, 3, 4, 100)] == [1.0, 0.5, 0.4, 0.25, 0.25]
    assert sprint.cap_fraction(2, 0.6) == 0.6


def test_power_cap_trims_a_dominant_host() -> None:
    # ascending 10,10,10,10,100: at k=4, 100 > 0.25*(40 + 100) so cap = 0.25*40 / (1 - 0.25) = 13.33
    assert sprint.power_cap([100, 10, 10, 10, 10], 0.25) == [13, 10, 10, 10, 10]
    # N=3 with c=0.4: at k=2, 100 > 0.4*(20 + 100) so cap = 0.4*20 / 0.6 = 13.33
    assert sprint.power_cap([10, 100, 10], sprint.cap_fraction(3, 0.25)) == [10, 13, 10]
    # N=2 with c=0.5: at k=1, 100 > 0.5*(1 + 100) so cap = 0.5*1 / 0.5 = 1
    assert sprint.power_cap([100, 1], sprint.cap_fraction(2, 0.25)) == [1, 1]


def test_power_cap_leaves_balanced_weights_alone() -> None:
    assert sprint.power_cap([10, 10, 10, 10], 0.25) == [10, 10, 10, 10]  # 10 > 0.25*40 is false: boundary
    assert sprint.power_cap([7], 1.0) == [7]
    assert sprint.power_cap([], 0.25) == []
    assert sprint.power_cap([0, 0, 5, 5, 5, 5], 0.25) == [0, 0, 5, 5, 5, 5]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=4, max_size=30))
def test_power_cap_never_lets_a_host_exceed_the_fraction(weights: list[int]) -> None:
    capped = sprint.power_cap(weights, 0.25)
    assert all(0 <= new <= old for new, old in zip(capped, weights, strict=True))
    assert max(capped) <= 0.25 * sum(capped) or sum(1 for w in weights if w) < 4
    pairs = list(zip(weights, capped, strict=True))
    assert all(a_new <= b_new for a_old, a_new in pairs for b_old, b_new in pairs if a_old <= b_old)  # order kept


def test_collateral_backs_weight_after_the_grace_period() -> None:
    assert sprint.collateral_adjust(100, 0, 1, epochs_since_genesis=179, grace_epochs=180) == 100
    assert sprint.collateral_adjust(100, 0, 1, epochs_since_genesis=180, grace_epochs=180) == 20
    assert sprint.collateral_adjust(100, 50, 1, 200, 180) == 70
    assert sprint.collateral_adjust(100, 10**6, 1, 200, 180) == 100
    assert sprint.collateral_adjust(100, 100, 3, 200, 180) == 53  # 20 + 33.3
    with pytest.raises(ValueError, match="price_per_weight_unit"):
        sprint.collateral_adjust(100, 100, 0, 200, 180)
