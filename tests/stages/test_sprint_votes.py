"""Sprint votes cast in rounds (stages/sprint.SprintVotes): every vote equals its validator's own fraud test on the sample
it drew, whatever the path that got it there (one sample shared by a committee, samples apart past 200 hits, a sample
only a skipper drew, duplicate nonces), and an engine's answer of the wrong length is refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gonka_pipelines.local.config import load_genesis
from gonka_pipelines.protocol.rules import rules_for
from gonka_pipelines.protocol.sprint import is_fraud
from gonka_pipelines.stages.environment import epoch_parameters
from gonka_pipelines.stages.sprint import SprintVotes, _cast, _plan, recompute_distances

RULES = rules_for(epoch_parameters(load_genesis(), 1))
R = RULES.params.r_target
COMMITTEE = 5


def _distance(host: int, nonce: int) -> np.float32:
    """A recomputed distance as an engine returns it (float32): some nonces above r_target, some NaN (no mismatch)."""
    if (nonce + host) % 41 == 0:
        return np.float32(np.nan)
    return np.float32(R + 0.05 if (nonce * 7 + host) % 37 == 0 else R - 0.05)


def _votes(hosts: int, skipped: list[bool], lying: list[bool]) -> SprintVotes:
    count = hosts * COMMITTEE
    return SprintVotes([f"v{i}" for i in range(COMMITTEE)], [f"{i:064x}" for i in range(COMMITTEE)],
                       np.arange(0, count + 1, COMMITTEE), np.repeat(np.arange(hosts, dtype=np.int32), COMMITTEE),
                       np.tile(np.arange(COMMITTEE, dtype=np.int32), hosts), np.array(skipped), np.array(lying),
                       np.zeros(count, np.int32))


def test_votes_cast_in_rounds_are_each_validator_s_own_test_on_its_sample():
    claims = [
        [3, 5, 9, 11, 37, 37, 74],  # a duplicate nonce: the committee's one sample holds it twice, the recomputation once
        list(range(0, 500, 2)),  # 250 hits: each validator draws its own 200
        list(range(1, 400, 3)),  # 133 hits, every validator skips
        list(range(5, 60)),  # a liar among recomputing validators
    ]
    skipped = [False] * 5 + [True, False, False, True, False] + [True] * 5 + [False, False, True, False, False]
    lying = [False] * 15 + [False, True, False, False, False]
    for index in (15 + 1,):  # a liar votes without recomputing
        skipped[index] = True
    votes = _votes(len(claims), skipped, lying)
    env = SimpleNamespace(rules=RULES, prev_hash="ab" * 32)
    drawn = []
    for rounds in ([0, 1], [2, 3]):
        for position in rounds:
            samples, needed = _plan(env, votes, position, claims[position])  # type: ignore[arg-type]
            drawn.append(samples)
            _cast(votes, position, samples, needed, np.array([_distance(position, n) for n in needed], np.float32))
        if rounds == [0, 1]:
            assert any(distances is None for distances in votes.pending[1:-1]), "a sample only a skipper drew, among others"
        votes.settle(RULES)
    assert len(set(map(tuple, drawn[1]))) == COMMITTEE, "past 200 hits every validator draws its own sample"
    sampled, mismatches, valid = votes.cast()
    sprint = RULES.params.sprint
    for vote in range(len(sampled)):
        host, member = divmod(vote, COMMITTEE)
        sample = drawn[host][member]
        if lying[vote]:
            expected = (len(sample), len(sample), False)
        elif skipped[vote]:
            expected = (len(sample), 0, True)
        else:
            k = sum(bool(float(_distance(host, n)) > R) for n in sample)
            expected = (len(sample), k, not is_fraud(k, len(sample), sprint.mismatch_probability, sprint.fraud_threshold))
        assert (int(sampled[vote]), int(mismatches[vote]), bool(valid[vote])) == expected, (host, member)
    assert mismatches[:5].tolist() == [3] * 5, "the duplicate's two entries in the sample both count"


def test_votes_are_refused_before_their_last_round_is_settled():
    votes = _votes(1, [False] * COMMITTEE, [False] * COMMITTEE)
    env = SimpleNamespace(rules=RULES, prev_hash="ab" * 32)
    samples, needed = _plan(env, votes, 0, [1, 2])  # type: ignore[arg-type]
    _cast(votes, 0, samples, needed, np.array([R, R + 1.0]))
    with pytest.raises(RuntimeError, match="settled"):
        votes.cast()
    votes.settle(RULES)
    assert votes.cast()[1].tolist() == [1] * COMMITTEE, "a distance equal to r_target is no mismatch"


class ShortDistances:
    def distances(self, public_key: str, nonces: list[int]) -> np.ndarray:
        return np.zeros(len(nonces) - 1)


def test_an_engine_s_distances_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match=r"shape \(2,\) for 3 nonces"):
        recompute_distances(ShortDistances(), ("ab" * 32, [1, 2, 3]))  # type: ignore[arg-type]
