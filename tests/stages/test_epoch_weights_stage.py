"""epoch_weights (PROTOCOL section 3, Acceptance and Weight pipeline): accepted hits → acceptance by the weighted vote
(> floor(W / 2) of the weight in force) → collateral adjustment after the grace period → power cap."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from stage_kit import STAGE_EPOCH, StageRun, assert_idempotent


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    run = StageRun.prepare(tmp_path_factory, "epoch_weights")
    result = run.run()
    with run.store() as store:
        rows = {r["name"]: r for r in store._records(
            "SELECT w.*, h.name FROM epoch_weights w JOIN hosts h USING (address) WHERE w.epoch = ?", [STAGE_EPOCH])}
        batches = store._records("SELECT batch_id, host, nonces, status FROM poc_batches WHERE epoch = ?", [STAGE_EPOCH])
        votes = store._records("SELECT validator, host, valid FROM poc_verdicts WHERE epoch = ?", [STAGE_EPOCH])
        collateral = {a["address"]: a["collateral"] for a in store.running_accounts(STAGE_EPOCH)}
        lineage = store._query("SELECT child_kind, child_id, parent_kind, parent_id, relation FROM lineage "
                               "WHERE epoch = ? AND relation LIKE 'sprint_weights:%'", [STAGE_EPOCH])
        recomputed = run.env.rules.epoch_weights(store.weight_inputs(STAGE_EPOCH), run.env.prev_hash, run.env.weights)
    return run, result, rows, batches, votes, collateral, lineage, recomputed


def protocol_power_cap(weights: list[int], c: Fraction) -> list[int]:
    """PROTOCOL.md's walk: ascending p_0..p_{N-1} with running sum S; at the first k where p_k > c·(S + p_k·(N−k)) the cap
    is c·S / (1 − c·(N−k)); every weight becomes min(w, floor(cap))."""
    ascending, below = sorted(weights), 0
    for k, p in enumerate(ascending):
        if p > c * (below + p * (len(weights) - k)):
            cap = math.floor(c * below / (1 - c * (len(weights) - k)))
            return [min(w, cap) for w in weights]
        below += p
    return list(weights)


def test_one_row_per_host_with_its_accepted_hits(weights):
    run, result, rows, batches, _, _, _, recomputed = weights
    assert {r["address"] for r in rows.values()} == {h.address for h in run.env.hosts}
    for row in rows.values():
        assert row["hits"] == sum(len(b["nonces"]) for b in batches if b["host"] == row["address"] and b["status"] == "accepted")
    assert rows["host-fake"]["hits"] == 256, "its two accepted batches; the resent and the late one do not count"
    assert sorted(result, key=lambda r: r["address"]) == sorted(recomputed, key=lambda r: r["address"])
    assert {r["address"]: r["weight"] for r in result} == {r["address"]: r["weight"] for r in rows.values()}


def test_acceptance_needs_more_than_half_the_weight_in_force(weights):
    run, _, rows, _, votes, _, _, _ = weights
    in_force = run.env.weights
    total = sum(in_force.values())
    for name, row in rows.items():
        valid_weight = sum(in_force[v["validator"]] for v in votes if v["host"] == row["address"] and v["valid"])
        assert row["valid_vote_weight"] == valid_weight, name
        assert row["sprint_accepted"] is (row["hits"] > 0 and valid_weight > total // 2), name
    fake = rows["host-fake"]
    assert fake["sprint_accepted"] is False and fake["adjusted_weight"] == fake["weight"] == 0
    assert fake["valid_vote_weight"] == in_force[next(h.address for h in run.env.hosts if h.name == "host-lazy")], \
        "only the lazy validator voted valid"
    assert all(row["sprint_accepted"] for name, row in rows.items() if name != "host-fake")


def test_a_hosts_own_vote_counts_toward_its_acceptance(weights):
    """Every validator, the host itself included, votes valid on an honest sprint: the valid weight is all the weight
    (PROTOCOL section 3, as in Gonka; it used to leave the host's own weight out, so it counted against it)."""
    run, _, rows, _, _, _, _, _ = weights
    total = sum(run.env.weights.values())
    assert {name: row["valid_vote_weight"] for name, row in rows.items() if name != "host-fake"} == \
        {name: total for name in rows if name != "host-fake"}


def test_collateral_backs_the_weight_after_the_grace_period(weights):
    """Epoch 2 is past the 2-epoch grace: w' = floor(0.2·w + min(0.8·w, collateral / price per weight unit))."""
    run, _, rows, _, _, collateral, _, _ = weights
    sprint = run.env.params.sprint
    assert STAGE_EPOCH >= sprint.collateral_grace_epochs == 2 and sprint.price_per_weight_unit == 1
    for name, row in rows.items():
        hits = row["hits"] if row["sprint_accepted"] else 0
        free = Fraction(hits, 5)
        assert row["adjusted_weight"] == math.floor(free + min(hits - free, Fraction(collateral[row["address"]]))), name
    bravo, charlie, alpha = rows["host-bravo"], rows["host-charlie"], rows["host-alpha"]
    assert bravo["adjusted_weight"] == bravo["hits"] // 5 < bravo["hits"], "no collateral: only 20 % of the weight is free"
    assert charlie["adjusted_weight"] == math.floor(Fraction(charlie["hits"], 5) + 2) < charlie["hits"], "collateral 2 backs 2"
    assert alpha["adjusted_weight"] == alpha["hits"], "fully backed"


def test_the_power_cap_binds_at_a_quarter_of_the_total(weights):
    _, _, rows, _, _, _, _, _ = weights
    names = sorted(rows)
    adjusted = [rows[n]["adjusted_weight"] for n in names]
    eligible = sum(1 for w in adjusted if w > 0)
    assert eligible == 6, "6 >= 4 hosts with weight: c stays 0.25"
    final = [rows[n]["weight"] for n in names]
    assert final == protocol_power_cap(adjusted, Fraction(1, 4))
    capped = {n for n in names if rows[n]["weight"] < rows[n]["adjusted_weight"]}
    assert "host-alpha" in capped, "the largest weight is cut to the cap"
    cap = max(final)
    assert capped == {n for n in names if rows[n]["adjusted_weight"] > cap}, "every weight above the cap, and only those"
    assert cap * 4 <= sum(final), "no host holds more than a quarter of the capped total"
    assert {rows[n]["weight"] for n in capped} == {cap}


def test_each_weight_links_to_the_accepted_batches_behind_it(weights):
    _, _, _, batches, _, _, lineage, _ = weights
    accepted = sorted(("weight", b["host"], "poc_batch", b["batch_id"], "sprint_weights:hits") for b in batches if b["status"] == "accepted")
    assert sorted(lineage) == accepted


def test_the_stage_opens_the_chain_once_and_computes_nothing(weights):
    run = weights[0]
    assert run.opener.opens == 1 and dict(run.compute.calls) == {}


def test_rerunning_the_stage_is_idempotent(tmp_path_factory):
    assert_idempotent(tmp_path_factory, "epoch_weights")
