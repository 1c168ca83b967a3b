"""Sprint rules against PROTOCOL.md section 3: calibration, nonce sampling, fraud test, acceptance, weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gonka_pipelines.protocol import sprint

BLOCK = "9f" * 32
MAINNET_R_TARGET = 1.4013564660458173
SMALL_NETWORK_CAPS = (1.0, 0.5, 0.4)
"""PROTOCOL.md section 3: for N < 4 hosts the cap is raised to 1.0, 0.5, 0.4."""


# --- calibration --------------------------------------------------------------------------------


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


def test_each_validators_sample_is_its_own_draw_shared_only_when_every_nonce_is_taken() -> None:
    keys, nonces = ["v1", "v2", "v3"], list(range(1000, 1500))
    for claimed in (nonces, nonces[:200], nonces[:6], []):
        each = sprint.sample_nonces_each(keys, BLOCK, 7, claimed[::-1])
        assert each == [sprint.sample_nonces(key, BLOCK, 7, claimed) for key in keys]
    assert len({tuple(sample) for sample in sprint.sample_nonces_each(keys, BLOCK, 7, nonces)}) == 3


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


def test_mismatches_count_recomputed_distances_above_r_target() -> None:
    """Gonka's fraud test counts distance > r_target: a recomputed distance equal to it is no mismatch. Several
    recomputations given end to end are counted each apart, empty ones included."""
    assert sprint.mismatches_each(np.array([1.30, 1.39, 1.40, 1.41]), np.array([4]), 1.40).tolist() == [1]
    assert sprint.mismatches_each(np.array([]), np.array([], np.int64), 1.4).tolist() == []
    distances = np.array([1.5, 1.41, 1.0, np.nan, 2.0, 1.40, 1.3])
    assert sprint.mismatches_each(distances, np.array([2, 0, 3, 2, 0]), 1.40).tolist() == [2, 0, 1, 0, 0], (
        "a NaN distance is no mismatch (not above), as numpy's > says")


def test_acceptance_needs_more_than_half_of_the_weight() -> None:
    assert not sprint.sprint_accepted(5, 10) and sprint.sprint_accepted(6, 10)
    assert not sprint.sprint_accepted(5, 11) and sprint.sprint_accepted(6, 11)
    assert not sprint.sprint_accepted(0, 0)


# --- weights ------------------------------------------------------------------------------------


def test_cap_fraction_is_raised_for_small_networks() -> None:
    assert [sprint.cap_fraction(n, 0.25, SMALL_NETWORK_CAPS) for n in (1, 2, 3, 4, 100)] == [1.0, 0.5, 0.4, 0.25, 0.25]
    assert sprint.cap_fraction(2, 0.6, SMALL_NETWORK_CAPS) == 0.6


def test_power_cap_trims_a_dominant_host() -> None:
    # ascending 10,10,10,10,100: at k=4, 100 > 0.25*(40 + 100) so cap = 0.25*40 / (1 - 0.25) = 13.33
    assert sprint.power_cap([100, 10, 10, 10, 10], 0.25) == [13, 10, 10, 10, 10]
    # N=3 with c=0.4: at k=2, 100 > 0.4*(20 + 100) so cap = 0.4*20 / 0.6 = 13.33
    assert sprint.power_cap([10, 100, 10], sprint.cap_fraction(3, 0.25, SMALL_NETWORK_CAPS)) == [10, 13, 10]
    # N=2 with c=0.5: at k=1, 100 > 0.5*(1 + 100) so cap = 0.5*1 / 0.5 = 1
    assert sprint.power_cap([100, 1], sprint.cap_fraction(2, 0.25, SMALL_NETWORK_CAPS)) == [1, 1]


def test_a_power_cap_of_zero_means_no_cap() -> None:
    """As in Gonka: c = 0 switches the cap off (it does not zero every weight), whatever the network's size."""
    assert sprint.power_cap([100, 10, 10, 10, 10], 0) == [100, 10, 10, 10, 10]
    assert sprint.cap_fraction(2, 0, SMALL_NETWORK_CAPS) == 0


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
    assert sprint.collateral_adjust(100, 0, 1, epochs_since_genesis=179, grace_epochs=180, base_fraction=0.2) == 100
    assert sprint.collateral_adjust(100, 0, 1, epochs_since_genesis=180, grace_epochs=180, base_fraction=0.2) == 20
    assert sprint.collateral_adjust(100, 50, 1, 200, 180, 0.2) == 70
    assert sprint.collateral_adjust(100, 10**6, 1, 200, 180, 0.2) == 100
    assert sprint.collateral_adjust(100, 100, 3, 200, 180, 0.2) == 53  # 20 + 33.3
    with pytest.raises(ValueError, match="price_per_weight_unit"):
        sprint.collateral_adjust(100, 100, 0, 200, 180, 0.2)
