"""Executor choice: each task goes to a host drawn with probability proportional to weight, replayably."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gonka_pipelines.protocol import _sha256

DRAW_BYTES = 8
"""A protocol draw is the first 8 bytes of a SHA-256 digest, read big-endian (as Gonka does)."""

_LOW_32 = np.uint64(0xFFFFFFFF)
_HALF_WORD = np.uint64(32)


def sha256_u64(prefix: bytes, texts: Sequence[str]) -> np.ndarray:
    """First 8 bytes of SHA-256(prefix ‖ UTF-8 of text) of each text as a uint64 array: the protocol's 64-bit draw
    (hashed in C, _sha256.digests: a million task ids an epoch)."""
    digests = np.frombuffer(_sha256.digests(prefix, list(texts)), dtype=np.uint8).reshape(-1, 32)
    return np.ascontiguousarray(digests[:, :DRAW_BYTES]).view(">u8").ravel().astype(np.uint64)


def scale_draws(draws: np.ndarray, bound: int) -> np.ndarray:
    """floor(u * bound) for u = draw / 2^64, exactly: the high word of the 128-bit product draw * bound.

    Integer arithmetic keeps every replay bit-identical and never rounds a draw up to bound itself.
    """
    if not 0 <= bound < 2**63:
        raise ValueError(f"bound must be in [0, 2^63), got {bound}")
    a_low, a_high = draws & _LOW_32, draws >> _HALF_WORD
    b = np.uint64(bound)
    b_low, b_high = b & _LOW_32, b >> _HALF_WORD
    low_low, high_low, low_high = a_low * b_low, a_high * b_low, a_low * b_high
    # Each partial product is below 2^64 and so is this sum: (2^32-1)^2 + 2*(2^32-1) = 2^64 - 1.
    carry = (low_low >> _HALF_WORD) + (high_low & _LOW_32) + low_high
    return a_high * b_high + (high_low >> _HALF_WORD) + (carry >> _HALF_WORD)


def assign_executors(
    prev_hash: str, task_ids: Sequence[str], hosts: Sequence[str], weights: Sequence[int]
) -> list[str]:
    """The executor of each task, drawn with probability weight / total weight among the given hosts.

    u = first 8 bytes of SHA-256(prev_hash ‖ task_id) / 2^64 picks the point floor(u * W) on the
    cumulative weights of the hosts in sorted address order, so anyone can replay the choice and
    zero-weight hosts own no point. Pass only the hosts serving the task's model.
    """
    if len(hosts) != len(weights):
        raise ValueError(f"{len(hosts)} hosts but {len(weights)} weights")
    if len(set(hosts)) != len(hosts):
        raise ValueError("host addresses must be unique")
    order = sorted(range(len(hosts)), key=hosts.__getitem__)
    sorted_weights = np.array([weights[i] for i in order], dtype=np.int64)
    if (sorted_weights < 0).any():
        raise ValueError("weights must be non-negative")
    cumulative = np.cumsum(sorted_weights)
    total = int(cumulative[-1]) if len(cumulative) else 0
    if total <= 0:
        raise ValueError("no host has weight: cannot assign tasks")
    points = scale_draws(sha256_u64(prev_hash.encode(), task_ids), total)
    picks = np.searchsorted(cumulative, points.astype(np.int64), side="right")
    sorted_hosts = [hosts[i] for i in order]
    return [sorted_hosts[pick] for pick in picks.tolist()]
