"""Per-host standing from validation outcomes (RAMPING / ACTIVE / INVALID) and reputation 0..100."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal

import polars as pl

MAX_REPUTATION = 100
"""The reputation scale: 0..100 (a unit, not a consensus number; the numbers are in ValidationParams/RewardParams)."""
_REPUTATION_STEP = Decimal("0.01")
"""x / 30 is truncated to two decimals before scaling, as Gonka's decimal arithmetic does."""


class HostStatus(enum.StrEnum):
    """A host's standing in the current epoch; INVALID loses weight, fees and reward."""

    RAMPING = "RAMPING"
    ACTIVE = "ACTIVE"
    INVALID = "INVALID"


HOST_STATUS_DTYPE = pl.Enum([status.value for status in HostStatus])


def host_statuses(
    hosts: pl.DataFrame,
    *,
    false_positive_rate: float,
    ramping_tasks: int,
    invalid_streak_probability: float,
    z_threshold: float,
) -> pl.DataFrame:
    """hosts plus a 'status' column, from columns consecutive_invalidations, n_executed, n_validated, n_invalidated.

    In order: INVALID if FPR^consecutive < 1e-6; RAMPING below ramping_tasks executed tasks (as Gonka counts them:
    at a 1 % validation rate a host would need ~1,000 tasks before a count of validated ones let the z-test run);
    INVALID if z = (f - FPR) / sqrt(FPR(1 - FPR) / n) > z_threshold, f = n_invalidated / n; else ACTIVE.
    """
    n = pl.col("n_validated")
    failed_fraction = pl.col("n_invalidated") / n
    z = (failed_fraction - false_positive_rate) / (false_positive_rate * (1 - false_positive_rate) / n).sqrt()
    status = (
        pl.when(pl.lit(false_positive_rate).pow(pl.col("consecutive_invalidations")) < invalid_streak_probability)
        .then(pl.lit(HostStatus.INVALID.value))
        .when(pl.col("n_executed") < ramping_tasks)
        .then(pl.lit(HostStatus.RAMPING.value))
        .when(z > z_threshold)
        .then(pl.lit(HostStatus.INVALID.value))
        .otherwise(pl.lit(HostStatus.ACTIVE.value))
    )
    return hosts.with_columns(status.cast(HOST_STATUS_DTYPE).alias("status"))


def host_status(
    consecutive_invalidations: int,
    n_validated: int,
    n_invalidated: int,
    *,
    n_executed: int,
    false_positive_rate: float,
    ramping_tasks: int,
    invalid_streak_probability: float,
    z_threshold: float,
) -> HostStatus:
    """One host's status: host_statuses on a one-row frame, so there is a single rule set."""
    row = pl.DataFrame(
        {
            "consecutive_invalidations": [consecutive_invalidations],
            "n_executed": [n_executed],
            "n_validated": [n_validated],
            "n_invalidated": [n_invalidated],
        }
    )
    result = host_statuses(
        row,
        false_positive_rate=false_positive_rate,
        ramping_tasks=ramping_tasks,
        invalid_streak_probability=invalid_streak_probability,
        z_threshold=z_threshold,
    )
    return HostStatus(result["status"][0])


def reputation(
    epochs_served: int,
    miss_rates: Sequence[float],
    *,
    epochs_to_max: int,
    miss_rate_cutoff: float,
) -> int:
    """Reputation 0..100: x = epochs served - sum of miss rates above 1 %; 100 past 30, 0 at or below 0.

    In between floor(100 * trunc2(x / 30)). Decimal arithmetic on each rate's shortest decimal form
    (like Go's decimal.NewFromFloat) keeps x = 9.3 from landing on 30 instead of 31.
    """
    rates = [Decimal(str(rate)) for rate in miss_rates]
    cutoff = Decimal(str(miss_rate_cutoff))
    x = Decimal(epochs_served) - sum((rate for rate in rates if rate > cutoff), Decimal(0))
    if x > epochs_to_max:
        return MAX_REPUTATION
    if x <= 0:
        return 0
    fraction = (x / epochs_to_max).quantize(_REPUTATION_STEP, rounding=ROUND_DOWN)
    return int(fraction * MAX_REPUTATION)
