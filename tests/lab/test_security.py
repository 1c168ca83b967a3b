"""Detection power by Monte Carlo through the rule set: measured rates agree with theory where one exists, the
protocol's blind spots are where docs/security.md says, and the command runs and refuses unknown studies."""

from __future__ import annotations

import math

import pytest

from gonka_pipelines import cli
from gonka_pipelines.lab.security import (
    admission_cheats,
    bad_executors,
    collusion,
    fraud_floor,
    honest_noise,
    lazy_validators,
    skipped_validations,
    sprint_cheats,
    sprint_theory,
    study_for,
)


def within(measured: float, theory: float, trials: int, sigmas: float = 4.0) -> bool:
    """|measured - theory| within `sigmas` binomial standard errors (at least one trial's worth)."""
    return abs(measured - theory) <= max(sigmas * math.sqrt(theory * (1 - theory) / trials), 1 / trials)


@pytest.fixture(scope="module")
def study():
    return study_for(None, 200)


def test_the_fraud_test_needs_five_misses_in_two_hundred(study):
    """PROTOCOL section 3: at n = 200 fraud means k >= 5: 5 fakes that all recompute as misses in a fully sampled
    claim are flagged by a validator with probability 0.95^5 + ..., 4 never."""
    assert fraud_floor(study, 200) == 5 and fraud_floor(study, 50) == 4
    assert sprint_theory(study, 200, 4)[0] == 0.0
    assert sprint_theory(study, 200, 5)[0] == pytest.approx(0.95**5, rel=1e-9)


def test_padding_below_the_floor_pays_and_above_it_is_caught(study):
    rows = {(r["hits"], r["x"]): r for r in sprint_cheats(study, [0.02, 0.1, 1.0], [50, 1000])}
    small_pad, large_pad, all_fake = rows[(50, 0.02)], rows[(50, 0.1)], rows[(50, 1.0)]
    assert small_pad["caught_rate"] == 0.0 and small_pad["attacker_gain_gnk"] > 0, "1 fake in 51 claims: unseen, and paid"
    assert large_pad["theory"] > 0.99 and within(large_pad["caught_rate"], large_pad["theory"], 200)
    assert all_fake["caught_rate"] == 1.0
    assert all_fake["attacker_gain_gnk"] == pytest.approx(-study.reward_gnk / 10), "caught: it loses an honest host's reward"
    partial = rows[(1000, 0.02)]  # 20 fakes in 1,020 claims, 200 sampled per validator
    assert 0 < partial["theory"] < 1 and within(partial["caught_rate"], partial["theory"], 200)
    assert partial["honest_flagged_rate"] > 0, "validators whose sample missed the fakes are contradicted"


def test_honest_noise_at_the_assumed_rate_is_not_flagged(study):
    calm, loud = honest_noise(study, [5e-4, 0.05])
    assert calm["honest_flagged_rate"] == 0.0 and loud["honest_flagged_rate"] > 0.05
    assert within(loud["honest_flagged_rate"], loud["theory"], 200), "every validator recomputes the same 50 claims"


def test_reused_and_late_batches_are_always_refused(study):
    assert [r["caught_rate"] for r in admission_cheats(study)] == [1.0, 1.0]


def test_skipped_validations_are_caught_as_often_as_the_draw_says(study):
    rows = skipped_validations(study, [10, 30, 1000], [0])
    for row in rows[:2]:
        assert 0.3 < row["theory"] < 0.9 and within(row["caught_rate"], row["theory"], 200), row
    assert rows[2]["caught_rate"] == 1.0 and rows[2]["honest_flagged_rate"] == 0.0


def test_a_small_bad_executor_escapes_invalid_status_and_a_busy_one_does_not(study):
    """Below ramping_tasks executed tasks only a streak of 5 invalidations makes a host INVALID, so at 20 tasks an
    epoch a cheating executor loses only its checked tasks' fees; at 1,000 the z-test catches it every time."""
    quiet, busy = bad_executors(study, [20, 1000], [100])
    assert quiet["caught_rate"] <= 0.01 and busy["caught_rate"] == 1.0
    assert busy["attacker_gain_gnk"] == pytest.approx(-study.reward_gnk / 20 - 20 * 100 * 1000 / 20 / 1e9, rel=0.05)


def test_lazy_validators_are_caught_only_when_someone_cheats(study):
    none, some = lazy_validators(study, [1000], [0.0, 0.05])
    assert none["caught_rate"] == 0.0
    assert within(some["caught_rate"], some["theory"], 200)


def test_a_colluding_minority_never_invalidates(study):
    """The study's fail vote is the stages' (Voters): below the quorum the target's task survives every trial; colluders
    allowed up to 0.6 of the weight reach half in most."""
    rows = collusion(study, [0.3, 0.45, 0.6])
    assert rows[0]["honest_flagged_rate"] == rows[1]["honest_flagged_rate"] == 0.0
    assert rows[2]["honest_flagged_rate"] > 0.5


def test_cli_security_prints_tables_and_refuses_unknown_studies(tmp_path, capsys):
    args = ["--data-dir", str(tmp_path), "security", "--trials", "20", "--out", str(tmp_path / "s")]
    assert cli.main([*args, "--study", "admission", "--study", "collusion"]) == 0
    out = capsys.readouterr().out
    assert "| reused nonces: one extra batch of 8 claims | 20 | 1.0000 |" in out and "colluding minority (collusion)" in out
    assert [p.name.rsplit("-", 1)[0] for p in sorted((tmp_path / "s").glob("*.parquet"))] == ["admission-20", "collusion-20"]
    assert cli.main([*args, "--study", "admission", "--profile", "mainnet"]) == 0, "another profile: its own results"
    assert len(list((tmp_path / "s").glob("admission-20-*.parquet"))) == 2
    assert cli.main([*args, "--study", "nonsense"]) == 2
    assert "unknown study nonsense; choose from sprint, noise, admission" in capsys.readouterr().err
