"""Rule sets: selected by the name the params record, bound to the params, so every consensus number comes from them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from gonka_pipelines.protocol.inference_validation import ComparisonReason
from gonka_pipelines.protocol.params import EpochParams
from gonka_pipelines.protocol.rules import RULE_SETS, GonkaPipelinesV1, rules_for
from gonka_pipelines.protocol.sprint import is_fraud

PARAMS = EpochParams.model_validate({
    "profile": "test", "rules": "gonka-pipelines/1", "chain_id": "rules-test", "genesis_time": "2026-01-01T00:00:00Z",
    "epoch_seconds": 600, "token": {"denom": "GNK", "base_units": 10**9},
    "emission": {"initial_reward": 10**12, "decay_rate": 0.000475, "supply_cap": 10**16},
    "sprint": {"model": "poc-tiny", "duration_seconds": 60, "late_grace_seconds": 5, "wanted_hit_rate": 0.05,
               "nonces_per_capacity": 256, "validation_sample": 200, "mismatch_probability": 5e-4, "fraud_threshold": 1e-7,
               "power_cap": 0.25, "collateral_grace_epochs": 180, "collateral_base_fraction": 0.2, "price_per_weight_unit": 1,
               "small_network_caps": [1.0, 0.5, 0.4], "genesis_weight": 1},
    "tasks": {"max_prompt_bytes": 200, "max_tokens_limit": 32, "price_per_token": 100, "free_epochs": 0, "tasks_per_capacity": 5,
              "max_submission_bytes": 8192, "max_submissions_per_epoch": 1000},
    "training": {"max_steps": 64, "max_batch_size": 64, "max_learning_rate": 0.1, "checkpoint_every": 4, "eval_windows": 32,
                 "weight_tolerance": 5e-3, "loss_tolerance": 2e-2, "served_rule": "lowest_eval_loss"},
    "validation": {"false_positive_rate": 0.05, "similarity_threshold": 0.98, "ramping_tasks": 10, "invalid_streak_probability": 1e-6,
                   "invalid_slash_fraction": 0.2, "miss_slash_fraction": 0.1, "miss_tolerance": 0.05, "z_threshold": 1.0,
                   "invalidation_quorum": 0.5, "tie_tolerance": 1e-4, "logprob_epsilon": 1e-6, "min_normalising_positions": 100,
                   "min_avg_traffic": [100, 5000, 10000], "min_avg_values": [1.0, 0.05, 0.01]},
    "rewards": {"vesting_epochs": 3, "epochs_to_full_reputation": 30, "miss_rate_cutoff": 0.01},
    "epoch": 2, "price_per_token": 100, "r_target": 1.3,
})
"""Gonka's numbers (PROTOCOL.md) for epoch 2."""


def changed(section: str, **values: object) -> EpochParams:
    return PARAMS.model_copy(update={section: getattr(PARAMS, section).model_copy(update=values)})


def test_the_params_name_the_rule_set_and_an_unknown_name_is_refused():
    assert isinstance(rules_for(PARAMS), GonkaPipelinesV1) and rules_for(PARAMS).params is PARAMS
    assert set(RULE_SETS) == {"gonka-pipelines/1"}
    with pytest.raises(ValueError, match="unknown rule set 'gonka/99'; known: gonka-pipelines/1"):
        rules_for(PARAMS.model_copy(update={"rules": "gonka/99"}))


def test_the_weights_pipeline_takes_the_cap_floors_and_the_free_fraction_from_the_params():
    rows = [{"address": "a", "hits": 100, "valid_vote_weight": 3, "collateral": 0},
            {"address": "b", "hits": 10, "valid_vote_weight": 3, "collateral": 10**6}]
    in_force = {"a": 1, "b": 1, "c": 1}
    weights = {r["address"]: r["weight"] for r in rules_for(PARAMS).epoch_weights(rows, "00" * 32, in_force)}
    assert weights == {"a": 10, "b": 10}, "two hosts: the cap is raised to 0.5; both at 10 within the grace period"
    past_grace = changed("sprint", collateral_grace_epochs=1, small_network_caps=(1.0, 1.0, 1.0))
    weights = {r["address"]: r["weight"] for r in rules_for(past_grace).epoch_weights(rows, "00" * 32, in_force)}
    assert weights == {"a": 20, "b": 10}, "past the grace a keeps 20 % unbacked; floor 1.0 for two hosts lifts the cap"
    freer = changed("sprint", collateral_grace_epochs=1, small_network_caps=(1.0, 1.0, 1.0), collateral_base_fraction=0.5)
    assert {r["address"]: r["weight"] for r in rules_for(freer).epoch_weights(rows, "00" * 32, in_force)}["a"] == 50
    uncapped = EpochParams.model_validate(PARAMS.as_dict() | {"sprint": PARAMS.as_dict()["sprint"] | {"power_cap": 0}})
    assert {r["address"]: r["weight"] for r in rules_for(uncapped).epoch_weights(rows, "00" * 32, in_force)} == {"a": 100, "b": 10}, \
        "a power cap of 0 is valid in the params and means no cap, even for two hosts (Gonka)"


def test_the_sprint_vote_is_the_binomial_test_at_the_params_threshold():
    rules = rules_for(PARAMS)
    assert rules.sprint_vote([1.0] * 196 + [2.0] * 4) == (4, True)
    assert rules.sprint_vote([1.0] * 195 + [2.0] * 5) == (5, False), "k >= 5 of n = 200 is fraud (PROTOCOL section 3)"
    assert rules.sprint_vote([]) == (0, True)


def test_sprint_votes_on_many_samples_at_once_are_each_sample_s_own_vote():
    rules = rules_for(PARAMS)
    rng = np.random.default_rng(7)
    samples = [rng.choice([1.0, 2.0], size=size, p=[0.98, 0.02]) for size in [200, 200, 3, 0, 200, 1, 150, 200]]
    samples[1][:5] = 2.0  # five mismatches in 200: fraud
    mismatches, valid = rules.sprint_votes(np.concatenate(samples), np.array([len(s) for s in samples]))
    sprint = PARAMS.sprint
    each = [(int((s > PARAMS.r_target).sum()), not is_fraud(int((s > PARAMS.r_target).sum()), len(s), sprint.mismatch_probability,
                                                             sprint.fraud_threshold)) for s in samples]
    assert list(zip(mismatches.tolist(), valid.tolist())) == each
    assert not valid[1] and valid[3], "five of 200 is fraud; an empty sample is no evidence"


def test_judging_uses_the_tie_tolerance_and_threshold_of_the_params():
    executor = ([[7, 8, 9, 10, 11]], [[-0.10, -0.10005, -3.0, -4.0, -5.0]])
    tie = ([[8, 7, 9, 10, 11]], [[-0.10, -0.10005, -3.0, -4.0, -5.0]])
    rules = rules_for(PARAMS)
    judged = rules.judge([7], 1, eos=256, executor=executor, rescore=lambda: tie)
    assert judged.passed, "the executor's token is within 1e-4 of the validator's best: the same choice"
    strict = rules_for(changed("validation", tie_tolerance=0.0)).judge([7], 1, eos=256, executor=executor, rescore=lambda: tie)
    assert strict == (False, 0.0, ComparisonReason.TOKENS_DIFFER)


def test_an_output_cut_short_fails_without_a_rerun():
    def rescore():
        raise AssertionError("no re-run for an output that stopped before EOS and max_tokens")

    assert rules_for(PARAMS).judge([1, 2], 4, eos=256, executor=([], []), rescore=rescore) == (
        False, 0.0, ComparisonReason.LENGTH_DIFFERS)


def test_status_reputation_quorum_and_rewards_read_the_params():
    rules = rules_for(PARAMS)
    frame = pl.DataFrame({"consecutive_invalidations": [5, 0], "n_executed": [5, 20], "n_validated": [5, 20], "n_invalidated": [5, 3]})
    assert rules.host_statuses(frame)["status"].to_list() == ["INVALID", "INVALID"]
    lenient = rules_for(changed("validation", z_threshold=2.1)).host_statuses(frame)["status"].to_list()
    assert lenient == ["INVALID", "ACTIVE"], "z = (0.15 - 0.05) / sqrt(0.05 · 0.95 / 20) ≈ 2.05: above 1, below 2.1"
    assert rules.reputation(15, [0.5]) == 48 and rules.reputation(15, [0.005]) == 50
    assert rules_for(changed("rewards", epochs_to_full_reputation=15)).reputation(15, []) == 100
    assert rules.task_invalidated(50, 100) and not rules.task_invalidated(49, 100)
    assert not rules_for(changed("validation", invalidation_quorum=0.75)).task_invalidated(74, 100)
    assert rules.scheduled_reward() == 999_525_112_794, "R(2) = floor(1e12 · exp(−0.000475))"
    assert rules.vesting_tranches(10) == [4, 3, 3]


@pytest.mark.parametrize(("invalid", "missed", "slashed"), [
    (True, True, 280),  # Gonka's double-jeopardy test: 1000 -> 900 (missed, 10 %) -> 720 (INVALID, 20 %)
    (True, False, 200),
    (False, True, 100),
    (False, False, 0),
])
def test_both_slashes_apply_each_to_what_the_other_left(invalid, missed, slashed):
    frame = pl.DataFrame({"collateral": [1000], "invalid": [invalid], "missed": [missed]})
    rule = rules_for(PARAMS).collateral_slash(pl.col("collateral"), pl.col("invalid"), pl.col("missed"))
    assert frame.select(rule).item() == slashed
