"""Emission, its cap, the weight-proportional split, vesting and the supply invariant, in base units."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from fractions import Fraction

import polars as pl

FIRST_REWARDED_EPOCH = 1
"""Epoch 0 is genesis (no sprint, no reward); R(1) = R0."""


def epoch_reward(epoch: int, r0: int, decay: float) -> int:
    """R(e) = floor(R0 * exp(-decay * (e - 1))), before the supply cap.

    Float64 is exact for R0 below 2^53 base units (mainnet R0 = 3.23e14), so R(1) = R0 exactly.
    """
    if epoch < FIRST_REWARDED_EPOCH:
        raise ValueError(f"epoch rewards start at epoch {FIRST_REWARDED_EPOCH}, got {epoch}")
    if r0 < 0:
        raise ValueError(f"R0 must be non-negative, got {r0}")
    return math.floor(r0 * math.exp(-decay * (epoch - FIRST_REWARDED_EPOCH)))


def mint_amount(reward: int, minted_so_far: int, supply_cap: int) -> int:
    """What may be minted of reward: all of it below the cap, the remainder when it would pass, then 0."""
    if reward < 0 or minted_so_far < 0:
        raise ValueError("reward and minted amount must be non-negative")
    return max(0, min(reward, supply_cap - minted_so_far))


def split_reward_frame(total: int, weights: pl.DataFrame) -> pl.DataFrame:
    """Columns address, weight -> sorted by address with a 'reward' column summing exactly to total.

    reward = floor(total * w / W) in 128-bit integers; the rounding remainder goes to the first
    address whose share is non-zero (PROTOCOL section 5), or to the first with w > 0 when every
    floor is 0. When W = 0 every reward is 0: nothing is paid, so the caller burns the epoch reward
    (or does not mint it).
    """
    if total < 0:
        raise ValueError(f"total must be non-negative, got {total}")
    if weights["address"].is_duplicated().any():
        raise ValueError("addresses must be unique")
    if (weights["weight"] < 0).any():
        raise ValueError("weights must be non-negative")
    frame = weights.select("address", pl.col("weight").cast(pl.Int64)).sort("address")
    total_weight = int(frame["weight"].sum())
    if total_weight == 0:
        return frame.with_columns(reward=pl.lit(0, dtype=pl.Int64))
    share = (pl.col("weight").cast(pl.Int128) * total) // total_weight
    frame = frame.with_columns(reward=share.cast(pl.Int64))
    remainder = total - int(frame["reward"].sum())
    paid = (pl.col("reward") > 0) if (frame["reward"] > 0).any() else (pl.col("weight") > 0)
    first_paid = paid & (paid.cast(pl.Int64).cum_sum() == 1)
    return frame.with_columns(reward=pl.col("reward") + pl.when(first_paid).then(remainder).otherwise(0))


def split_reward(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """{address: share} for every address with weight > 0 (split_reward_frame's rule); {} when W = 0."""
    frame = pl.DataFrame(
        {"address": list(weights), "weight": list(weights.values())},
        schema={"address": pl.String, "weight": pl.Int64},
    )
    paid = split_reward_frame(total, frame).filter(pl.col("weight") > 0)
    return dict(zip(paid["address"].to_list(), paid["reward"].to_list()))


def fraction_of(amount: pl.Expr, fraction: float) -> pl.Expr:
    """floor(amount * fraction) in exact integers, with the fraction at its decimal value (0.1 is 1/10)."""
    exact = Fraction(str(fraction))
    return (amount.cast(pl.Int128) * exact.numerator // exact.denominator).cast(pl.Int64)


def collateral_slash(collateral: pl.Expr, invalid: pl.Expr, missed_too_much: pl.Expr, *, invalid_fraction: float,
                     miss_fraction: float) -> pl.Expr:
    """What a host loses of its collateral: the missed-tasks slash, then the INVALID slash of what that left. Both apply
    (Gonka's double-jeopardy test: 1000 at 10 % then 20 % leaves 720, a slash of 280)."""
    missed = pl.when(missed_too_much).then(fraction_of(collateral, miss_fraction)).otherwise(0)
    return (missed + pl.when(invalid).then(fraction_of(collateral - missed, invalid_fraction)).otherwise(0)).cast(pl.Int64)


def vesting_tranches(amount: int, epochs: int) -> list[int]:
    """amount split evenly over epochs tranches, one unlocking per epoch; the remainder in the first."""
    if epochs < 1:
        raise ValueError(f"vesting needs at least one epoch, got {epochs}")
    if amount < 0:
        raise ValueError(f"amount must be non-negative, got {amount}")
    tranche, remainder = divmod(amount, epochs)
    return [tranche + remainder] + [tranche] * (epochs - 1)


class SupplyInvariantError(ValueError):
    """Holdings and issuance disagree: some code path created or destroyed tokens."""

    def __init__(self, holdings: int, issued: int) -> None:
        self.holdings, self.issued, self.difference = holdings, issued, holdings - issued
        super().__init__(
            f"supply invariant broken: balances + escrow + locked vesting + collateral + unclaimed payouts = {holdings} "
            f"but genesis supply + minted - burned = {issued} (difference {self.difference:+d})"
        )


Amounts = int | Iterable[int]
"""A total, or the amounts (rows of a table) that sum to it."""


def _total(amounts: Amounts) -> int:
    return amounts if isinstance(amounts, int) else sum(int(amount) for amount in amounts)


def check_supply(
    balances: Amounts,
    escrow: Amounts,
    locked_vesting: Amounts,
    collateral: Amounts,
    genesis_supply: int,
    minted: Amounts,
    burned: Amounts,
    unclaimed: Amounts = 0,
) -> int:
    """The total supply when Σ balances + escrow + locked vesting + collateral + unclaimed payouts = genesis + minted
    - burned (unclaimed: refused or unclaimed payouts, held one epoch before they burn).

    Otherwise raises SupplyInvariantError, which names both sides and carries their difference.
    """
    holdings = _total(balances) + _total(escrow) + _total(locked_vesting) + _total(collateral) + _total(unclaimed)
    issued = genesis_supply + _total(minted) - _total(burned)
    if holdings != issued:
        raise SupplyInvariantError(holdings, issued)
    return holdings
