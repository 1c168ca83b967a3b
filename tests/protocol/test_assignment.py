"""Executor choice: weight-proportional, replayable from the epoch seed, exact integer arithmetic."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gonka_pipelines.protocol.assignment import (
    assign_executors,
    scale_draws,
    sha256_u64,
)


def test_sha256_u64_is_the_big_endian_first_eight_bytes_of_prefix_and_text():
    texts = ["task-1", "", "tâche-中", "task-1"]
    expected = [int.from_bytes(hashlib.sha256(b"seed|" + text.encode()).digest()[:8], "big") for text in texts]
    assert sha256_u64(b"seed|", texts).tolist() == expected
    assert sha256_u64(b"", ["task-1"])[0] == int.from_bytes(hashlib.sha256(b"task-1").digest()[:8], "big")
    assert sha256_u64(b"x", []).shape == (0,)
    with pytest.raises(TypeError, match="item 1 is int, not str or bytes"):
        sha256_u64(b"", ["task-1", 7])  # type: ignore[list-item]


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**63 - 1))
def test_scale_draws_is_the_exact_high_word_of_the_product(draw, bound):
    assert int(scale_draws(np.array([draw], dtype=np.uint64), bound)[0]) == draw * bound >> 64


def test_scale_draws_refuses_bounds_past_int64():
    with pytest.raises(ValueError):
        scale_draws(np.zeros(1, dtype=np.uint64), 2**63)


def test_a_task_goes_to_the_host_owning_its_point_on_the_sorted_cumulative_weights():
    digest = hashlib.sha256(b"seed" + b"task-7").digest()
    point = int.from_bytes(digest[:8], "big") * 6 >> 64  # W = 1 + 2 + 3
    expected = "a" if point < 1 else "b" if point < 3 else "c"
    assert assign_executors("seed", ["task-7"], ["c", "a", "b"], [3, 1, 2]) == [expected]


def test_choice_frequencies_follow_weight_and_zero_weight_is_never_chosen():
    tasks = [f"t{i}" for i in range(60_000)]
    counts = Counter(assign_executors("epoch-5", tasks, ["h1", "h2", "h3", "idle"], [1, 2, 3, 0]))
    assert "idle" not in counts
    for host, share in {"h1": 1 / 6, "h2": 2 / 6, "h3": 3 / 6}.items():
        assert counts[host] / len(tasks) == pytest.approx(share, abs=0.01)


def test_choice_is_replayable_and_independent_of_host_order():
    tasks = [f"t{i}" for i in range(500)]
    first = assign_executors("seed", tasks, ["a", "b", "c"], [5, 1, 4])
    assert first == assign_executors("seed", tasks, ["c", "a", "b"], [4, 5, 1])
    assert first != assign_executors("other-seed", tasks, ["a", "b", "c"], [5, 1, 4])


def test_a_single_weighted_host_takes_every_task():
    assert assign_executors("s", ["x", "y"], ["only", "zero"], [7, 0]) == ["only", "only"]


@pytest.mark.parametrize(
    ("hosts", "weights"),
    [([], []), (["a", "b"], [0, 0]), (["a"], [1, 2]), (["a", "a"], [1, 1]), (["a", "b"], [2, -1])],
)
def test_invalid_host_sets_are_refused(hosts, weights):
    with pytest.raises(ValueError):
        assign_executors("seed", ["t"], hosts, weights)


def test_hundred_thousand_tasks_follow_the_weights():
    """Each host's share of 100,000 tasks is its weight share, within 5 standard deviations."""
    hosts = [f"host{i:02d}" for i in range(10)]
    weights = list(range(1, 11))
    tasks = [f"task{i}" for i in range(100_000)]
    counts = Counter(assign_executors("seed", tasks, hosts, weights))
    total = sum(weights)
    for host, weight in zip(hosts, weights):
        p = weight / total
        assert abs(counts[host] - p * len(tasks)) < 5 * (len(tasks) * p * (1 - p)) ** 0.5
