"""Host status (RAMPING / ACTIVE / INVALID) at its breakpoints, scalar and vectorised, and reputation."""

from __future__ import annotations

import polars as pl
import pytest

from gonka_pipelines.protocol.host_status import (
    HOST_STATUS_DTYPE,
    HostStatus,
    host_status,
    host_statuses,
    reputation,
)

GONKA = {"false_positive_rate": 0.05, "ramping_tasks": 10, "invalid_streak_probability": 1e-6, "z_threshold": 1.0}
"""PROTOCOL.md section 4, Status: FPR = 0.05, INVALID below 1e-6 (5 in a row), RAMPING under 10 tasks, z > 1."""
REPUTATION = {"epochs_to_max": 30, "miss_rate_cutoff": 0.01}
"""PROTOCOL.md section 4, Reputation: 100 past x = 30; only miss rates above 1 % count."""


@pytest.mark.parametrize(
    ("consecutive", "validated", "invalidated", "expected"),
    [
        (4, 0, 4, HostStatus.RAMPING),  # 0.05^4 = 6.25e-6: not yet
        (5, 0, 5, HostStatus.INVALID),  # 0.05^5 = 3.1e-7 < 1e-6, even while ramping
        (0, 9, 9, HostStatus.RAMPING),
        (0, 10, 0, HostStatus.ACTIVE),
        (0, 10, 1, HostStatus.ACTIVE),  # z = 0.05 / sqrt(0.0475 / 10) = 0.73
        (0, 10, 2, HostStatus.INVALID),  # z = 2.18
        (0, 19, 1, HostStatus.ACTIVE),  # z = 0.05
        (0, 19, 2, HostStatus.INVALID),  # z = 1.11
        (0, 100, 7, HostStatus.ACTIVE),  # z = 0.92
        (0, 100, 8, HostStatus.INVALID),  # z = 1.38
    ],
)
def test_status_rules_in_order(consecutive, validated, invalidated, expected):
    assert host_status(consecutive, validated, invalidated, n_executed=validated, **GONKA) is expected


@pytest.mark.parametrize(("executed", "validated", "invalidated", "expected"), [
    (9, 9, 0, HostStatus.RAMPING),
    (10, 1, 0, HostStatus.ACTIVE),  # 10 executed end the ramp though only 1 was validated: z = -0.23
    (10, 1, 1, HostStatus.INVALID),  # z = 0.95 / sqrt(0.0475) = 4.36
    (1000, 10, 1, HostStatus.ACTIVE),  # 1 % validation of 1,000 tasks: the z-test runs on 10
])
def test_ramping_counts_executed_tasks_as_gonka_does(executed, validated, invalidated, expected):
    """Gonka's RAMPING test compares the tasks a host executed with the threshold, not the ones validated."""
    assert host_status(0, validated, invalidated, n_executed=executed, **GONKA) is expected


def test_thresholds_are_parameters():
    assert host_status(0, 19, 2, n_executed=19, **(GONKA | {"z_threshold": 1.2})) is HostStatus.ACTIVE
    assert host_status(0, 5, 0, n_executed=5, **(GONKA | {"ramping_tasks": 5})) is HostStatus.ACTIVE
    assert host_status(3, 20, 3, n_executed=20, **(GONKA | {"invalid_streak_probability": 1e-3})) is HostStatus.INVALID


def test_vectorised_statuses_keep_the_host_column_and_use_an_enum():
    hosts = pl.DataFrame(
        {
            "host": ["a", "b", "c", "d"],
            "consecutive_invalidations": [5, 0, 0, 0],
            "n_executed": [50, 3, 100, 100],
            "n_validated": [50, 3, 100, 100],
            "n_invalidated": [5, 0, 2, 30],
        }
    )
    result = host_statuses(hosts, **GONKA)
    assert result["host"].to_list() == ["a", "b", "c", "d"]
    assert result["status"].dtype == HOST_STATUS_DTYPE
    assert result["status"].to_list() == ["INVALID", "RAMPING", "ACTIVE", "INVALID"]


@pytest.mark.parametrize(
    ("epochs", "miss_rates", "expected"),
    [
        (0, [], 0),
        (31, [], 100),
        (30, [], 100),  # x = 30 is not > 30 but 30/30 = 1.00
        (15, [], 50),
        (1, [], 3),  # 1/30 = 0.0333 -> 0.03
        (10, [0.01, 0.005], 33),  # rates at or below 1 % cost nothing: 10/30 -> 0.33
        (10, [0.7], 31),  # 9.3 / 30 = 0.31 exactly (float arithmetic would give 30)
        (30, [0.5], 98),  # 29.5 / 30 = 0.9833
        (32, [1.0, 0.5], 100),  # x = 30.5 > 30
        (1, [1.0], 0),  # x = 0
        (1, [1.0, 1.0], 0),  # x < 0
    ],
)
def test_reputation_at_the_breakpoints(epochs, miss_rates, expected):
    assert reputation(epochs, miss_rates, **REPUTATION) == expected
