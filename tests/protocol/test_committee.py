"""Committee validation (ours, after Gonka's validator slots): each host's sprint is checked by committee_size distinct
validators drawn by weight from the block hash, never by itself, so sprint validation costs hosts x size, not hosts²."""

from __future__ import annotations

from collections import Counter

import pytest
from test_rules import PARAMS

from gonka_pipelines.protocol.params import EpochParams
from gonka_pipelines.protocol.rules import rules_for
from gonka_pipelines.protocol.sprint import CommitteeDraw, _remembered_draws, drawn_committees

PREV = "ab" * 32


def draw_committee(prev_hash: str, epoch: int, host: str, weights: dict[str, int], size: int) -> list[str]:
    return CommitteeDraw(weights)(prev_hash, epoch, host, size)


def test_a_committee_is_distinct_drawn_from_weighted_hosts_other_than_the_host_and_replayable():
    weights = {f"h{i:02d}": 1 + i % 5 for i in range(40)} | {"idle": 0}
    committee = draw_committee(PREV, 3, "h07", weights, 8)
    assert len(committee) == len(set(committee)) == 8 and committee == sorted(committee)
    assert "h07" not in committee and "idle" not in committee
    assert draw_committee(PREV, 3, "h07", weights, 8) == committee, "seeded by block hash, epoch and host only"
    assert draw_committee(PREV, 4, "h07", weights, 8) != committee
    assert draw_committee("cd" * 32, 3, "h07", weights, 8) != committee


def test_everyone_eligible_sits_when_there_are_no_more_than_the_seats():
    weights = {"a": 1, "b": 5, "c": 0, "d": 2}
    assert draw_committee(PREV, 1, "a", weights, 3) == ["b", "d"]
    assert draw_committee(PREV, 1, "x", weights, 3) == ["a", "b", "d"]


def test_seats_follow_weight_like_successive_weighted_draws_without_replacement():
    """One seat: P(v) = w_v / W exactly. Over 4,000 hosts the seat counts match within 4 standard errors."""
    weights = {"v1": 1, "v2": 2, "v3": 3, "v4": 4}
    hosts = [f"host-{i}" for i in range(4000)]
    seats = Counter(draw_committee(PREV, 1, h, weights, 1)[0] for h in hosts)
    for validator, weight in weights.items():
        p = weight / 10
        assert abs(seats[validator] - 4000 * p) < 4 * (4000 * p * (1 - p)) ** 0.5, (validator, seats)
    # two seats: v4 sits with probability 0.4 + sum over first picks of P(first) * 4 / (10 - w_first)
    pairs = Counter(v for h in hosts for v in draw_committee(PREV, 1, h, weights, 2))
    p4 = 0.4 + sum(w / 10 * 4 / (10 - w) for w in (1, 2, 3))
    assert abs(pairs["v4"] - 4000 * p4) < 4 * (4000 * p4 * (1 - p4)) ** 0.5, pairs


def test_a_validator_holding_nearly_all_weight_does_not_stall_the_draw():
    weights = {"whale": 10**12} | {f"m{i}": 1 for i in range(30)}
    committee = draw_committee(PREV, 1, "someone", weights, 5)
    assert len(set(committee)) == 5 and "whale" in committee


def committee_params(size: int) -> EpochParams:
    return EpochParams.model_validate(PARAMS.as_dict() | {"sprint": PARAMS.as_dict()["sprint"] | {
        "validation": "committee", "committee_size": size}})


def test_the_rule_set_asks_everyone_under_full_validation_and_a_committee_otherwise():
    weights = {f"h{i}": 2 if i % 2 else 1 for i in range(10)} | {"new": 0}
    full = rules_for(PARAMS)
    assert PARAMS.sprint.validation == "full"
    committees = full.sprint_committees(PREV, ["h1", "new"], weights)
    assert committees["h1"] == committees["new"] == sorted(a for a, w in weights.items() if w), "full: its own vote counts"
    assert full.committee_weights(PREV, ["h1", "new"], weights) == {"h1": 15, "new": 15}
    rules = rules_for(committee_params(3))
    committees = rules.sprint_committees(PREV, ["h1", "new"], weights)
    assert all(len(c) == 3 and h not in c for h, c in committees.items())
    assert rules.committee_weights(PREV, ["h1", "new"], weights) == {h: sum(weights[v] for v in c) for h, c in committees.items()}


@pytest.mark.parametrize("valid, accepted", [(5, True), (4, False)])
def test_acceptance_needs_more_than_half_the_weight_asked(valid, accepted):
    """Committee {b, c, d} of weight 9 out of 12 in force: accepted iff
    the valid votes hold more than half of the committee's weight, not of all weight in force."""
    weights = {"a": 3, "b": 3, "c": 3, "d": 3}
    (row,) = rules_for(committee_params(3)).epoch_weights(
        [{"address": "a", "hits": 10, "valid_vote_weight": valid, "collateral": 0}], PREV, weights)
    assert row["vote_weight"] == 9, "a sits on no committee of its own"
    assert row["sprint_accepted"] is accepted


def test_a_validators_own_weight_is_left_out_of_its_draw():
    """v4 checked by one seat: P(v) = w_v / (W - w_v4) over the others, as if v4 were not there."""
    weights = {"v1": 1, "v2": 2, "v3": 3, "v4": 4}
    draw = CommitteeDraw(weights)
    seats = Counter(draw(f"{i:064x}", 1, "v4", 1)[0] for i in range(3000))
    assert "v4" not in seats
    for validator, weight in (("v1", 1), ("v2", 2), ("v3", 3)):
        p = weight / 6
        assert abs(seats[validator] - 3000 * p) < 4 * (3000 * p * (1 - p)) ** 0.5, seats


def test_committees_are_drawn_once_for_the_same_inputs_and_each_caller_gets_its_own_map():
    """Sprint validation and the weights' denominators ask for the same committees (for hosts listed otherwise): each is
    drawn once and remembered, the same as a fresh draw, and changing a returned map changes no later answer."""
    weights = {f"h{i:02d}": 1 + i % 7 for i in range(30)}
    hosts = sorted(weights)
    first = drawn_committees(PREV, 5, hosts[:20], weights, 4)
    assert first == {h: tuple(draw_committee(PREV, 5, h, weights, 4)) for h in hosts[:20]}
    first.clear()
    before = _remembered_draws.cache_info()
    again = drawn_committees(PREV, 5, hosts[::-1], dict(reversed(weights.items())), 4)
    after = _remembered_draws.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses), "the same weights, in whatever mapping order"
    remembered = _remembered_draws(PREV, 5, tuple(sorted(weights.items())), 4)
    assert len(remembered.committees) == 30, "each host drawn once: 20 hosts, then the 10 not asked before"
    assert again == {h: tuple(draw_committee(PREV, 5, h, weights, 4)) for h in hosts}
    assert drawn_committees(PREV, 5, hosts, weights | {"h00": 99}, 4) != again, "other weights, other committees"


class CountedDraw(CommitteeDraw):
    """A CommitteeDraw that counts the committees it draws one host at a time."""

    alone = 0

    def __call__(self, prev_hash: str, epoch: int, host: str, size: int) -> list[str]:
        self.alone += 1
        return super().__call__(prev_hash, epoch, host, size)


@pytest.mark.parametrize("weights, in_bulk", [
    ({f"h{i:03d}": 1 + i % 9 for i in range(300)}, True),
    ({f"h{i:03d}": 1 + i % 9 for i in range(300)} | {"idle": 0, "big": 50}, True),
    ({f"h{i:03d}": 2**24 + i for i in range(255)}, True),
    ({f"h{i:03d}": 2**24 + i for i in range(256)}, False),
    ({"whale": 10**6} | {f"m{i}": 1 for i in range(30)}, None),
    ({f"h{i}": 1 for i in range(17)}, None),
], ids=["small", "idle-and-big", "total-under-2^32", "total-past-2^32", "one-holds-nearly-all", "barely-more-than-seats"])
def test_committees_drawn_in_bulk_are_the_ones_drawn_one_by_one(weights, in_bulk):
    """CommitteeDraw.many reduces the first block's draws in 32-bit limbs with numpy and draws alone the hosts it cannot
    seat from that block (every host when the total weight is past 2^32): the same committees either way."""
    hosts = [*weights, "outsider", *sorted(weights)[:5]]
    for size in (1, 4, 16):
        draw = CountedDraw(weights)
        assert draw.many(PREV, 7, hosts, size) == [tuple(CommitteeDraw(weights)(PREV, 7, host, size)) for host in hosts]
        if in_bulk is not None:
            assert (draw.alone < len(hosts) // 10) if in_bulk else (draw.alone == len(hosts)), (size, draw.alone)
