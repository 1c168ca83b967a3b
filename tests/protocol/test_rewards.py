"""Emission curve and cap, the integer weight split, vesting and the supply invariant."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gonka_pipelines.protocol.rewards import (
    SupplyInvariantError,
    check_supply,
    epoch_reward,
    mint_amount,
    split_reward,
    split_reward_frame,
    vesting_tranches,
)

GNK = 10**9
MAINNET_R0 = 323_000 * GNK
MAINNET_CAP = 680_000_000 * GNK
EMISSION_DECAY = 0.000475
"""PROTOCOL.md section 5: R(e) = floor(R0 · exp(−0.000475 · (e − 1)))."""


def test_first_epoch_pays_r0_exactly():
    assert epoch_reward(1, MAINNET_R0, EMISSION_DECAY) == MAINNET_R0


def test_reward_halves_after_about_1459_epochs():
    assert math.log(2) / EMISSION_DECAY == pytest.approx(1459.2, abs=0.1)
    assert epoch_reward(1 + 1459, MAINNET_R0, EMISSION_DECAY) == math.floor(MAINNET_R0 * math.exp(-EMISSION_DECAY * 1459))
    assert epoch_reward(1 + 1459, MAINNET_R0, EMISSION_DECAY) / MAINNET_R0 == pytest.approx(0.5, abs=1e-3)


def test_reward_before_epoch_one_is_refused():
    with pytest.raises(ValueError):
        epoch_reward(0, MAINNET_R0, EMISSION_DECAY)


def test_mint_pays_the_remainder_at_the_cap_and_nothing_after():
    assert mint_amount(100, 0, 1000) == 100
    assert mint_amount(100, 950, 1000) == 50
    assert mint_amount(100, 1000, 1000) == 0


def test_mainnet_emission_stops_exactly_at_the_cap():
    minted, epoch = 0, 1
    while (amount := mint_amount(epoch_reward(epoch, MAINNET_R0, EMISSION_DECAY), minted, MAINNET_CAP)) > 0:
        minted, epoch = minted + amount, epoch + 1
    assert minted == MAINNET_CAP


def test_split_remainder_goes_to_the_first_paid_address():
    assert split_reward(10, {"c": 1, "a": 1, "b": 1}) == {"a": 4, "b": 3, "c": 3}
    assert split_reward(10, {"a": 0, "b": 1, "c": 2}) == {"b": 4, "c": 6}


def test_zero_total_weight_pays_nobody():
    assert split_reward(10, {"a": 0, "b": 0}) == {}
    assert split_reward(10, {}) == {}


def test_split_is_exact_for_mainnet_sized_numbers():
    weights = {f"host{i:05d}": 10**9 + i for i in range(10_000)}
    shares = split_reward(MAINNET_R0, weights)
    total_weight = sum(weights.values())
    assert sum(shares.values()) == MAINNET_R0
    assert shares["host09999"] == MAINNET_R0 * (10**9 + 9999) // total_weight


def test_split_frame_sorts_by_address_and_pays_zero_weight_nothing():
    frame = pl.DataFrame({"address": ["b", "a", "c"], "weight": [1, 0, 1]})
    result = split_reward_frame(7, frame)
    assert result["address"].to_list() == ["a", "b", "c"]
    assert result["reward"].to_list() == [0, 4, 3]


def test_split_refuses_negative_weights_and_duplicate_addresses():
    with pytest.raises(ValueError):
        split_reward(10, {"a": -1, "b": 2})
    with pytest.raises(ValueError):
        split_reward_frame(10, pl.DataFrame({"address": ["a", "a"], "weight": [1, 1]}))


@given(
    st.integers(0, 10**15),
    st.dictionaries(st.text(min_size=1, max_size=6), st.integers(0, 10**12), max_size=30),
)
def test_split_sums_exactly_and_floors_every_share(total, weights):
    shares = split_reward(total, weights)
    total_weight = sum(weights.values())
    if total_weight == 0:
        assert shares == {}
        return
    assert sum(shares.values()) == total
    floors = {address: total * weight // total_weight for address, weight in weights.items() if weight > 0}
    first_paid = min((a for a, f in floors.items() if f > 0), default=min(floors))
    for address, share in shares.items():
        assert share == floors[address] or (address == first_paid and share >= floors[address])


def test_the_remainder_goes_to_the_first_host_with_a_non_zero_share():
    """PROTOCOL section 5: not to the first host with weight, whose share may be 0 (item 8 of issue 8)."""
    assert split_reward(10, {"a": 1, "b": 1000}) == {"a": 0, "b": 10}
    assert split_reward(7, {"a": 1, "b": 5, "c": 5}) == {"a": 0, "b": 4, "c": 3}
    assert split_reward(1, {"a": 1, "b": 1}) == {"a": 1, "b": 0}, "every floor is 0: the first host with weight"


def test_vesting_puts_the_remainder_in_the_first_tranche():
    assert vesting_tranches(10, 3) == [4, 3, 3]
    assert vesting_tranches(5, 1) == [5]
    with pytest.raises(ValueError):
        vesting_tranches(5, 0)


@given(st.integers(0, 10**18), st.integers(1, 400))
def test_vesting_sums_exactly(amount, epochs):
    tranches = vesting_tranches(amount, epochs)
    assert len(tranches) == epochs and sum(tranches) == amount
    assert max(tranches) - min(tranches) < epochs


def test_supply_check_returns_the_supply_when_it_balances():
    assert check_supply([60, 30], 5, [3], [2], genesis_supply=90, minted=[15], burned=[5]) == 100


def test_supply_check_names_both_sides_and_the_difference():
    with pytest.raises(SupplyInvariantError, match=r"= 101 .* = 100 \(difference \+1\)") as caught:
        check_supply([61, 30], 5, [3], [2], genesis_supply=90, minted=[15], burned=[5])
    assert caught.value.difference == 1
