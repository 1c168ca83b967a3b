"""task_verdicts (PROTOCOL section 4, Who validates / Comparison / Outcome / Status / Reputation): validators drawn by
their secret seeds re-run tasks, failures go to a weighted vote (>= 50 % of the weight invalidates), fees are shared
between the executor and the passing validators, and each host's counts, streak, status and reputation follow."""

from __future__ import annotations

import math
from decimal import ROUND_DOWN, Decimal

import pytest

from gonka_pipelines.protocol.crypto import MessageKind, verify
from gonka_pipelines.protocol.host_status import host_status
from gonka_pipelines.protocol.inference_validation import MinAvg, ValidatorPool, select_validations
from gonka_pipelines.protocol.merkle import merkle_root_of_digests
from gonka_pipelines.protocol.messages import task_verdict_body
from gonka_pipelines.protocol.record_roots import record_leaf, records_root_body
from gonka_pipelines.protocol.rules import GonkaPipelinesV1
from gonka_pipelines.stages.inference import SCORED_PER_ORDER

from stage_kit import STAGE_EPOCH, StageRun, assert_idempotent
from support.chains import opened


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    run = StageRun.prepare(tmp_path_factory, "task_verdicts")
    result = run.run()
    with run.store() as store:
        data = {
            "results": store._records("SELECT * FROM task_results WHERE epoch = ? ORDER BY task_id", [STAGE_EPOCH]),
            "verdicts": store._records("SELECT * FROM task_verdicts WHERE epoch = ? ORDER BY task_id, validator", [STAGE_EPOCH]),
            "outcomes": {o["task_id"]: o for o in store._records("SELECT * FROM task_outcomes WHERE epoch = ?", [STAGE_EPOCH])},
            "shares": store._records("SELECT * FROM fee_shares WHERE epoch = ? ORDER BY task_id, host", [STAGE_EPOCH]),
            "host_epochs": {h["address"]: h for h in store._records("SELECT * FROM host_epochs WHERE epoch = ?", [STAGE_EPOCH])},
            "previous": store.host_states(STAGE_EPOCH - 1),
            "miss_history": store.miss_history(STAGE_EPOCH),
            "poc_contradictions": dict(store._query(
                """SELECT v.validator, count(*) FROM poc_verdicts v JOIN epoch_weights w ON w.address = v.host AND w.epoch = v.epoch
                   WHERE v.epoch = ? AND v.valid AND NOT w.sprint_accepted GROUP BY 1""", [STAGE_EPOCH])),
            "previous_tasks": store.task_count(STAGE_EPOCH - 1),
        }
    return run, result, data


def behaviours(run) -> dict[str, str]:
    return {h.address: h.behaviour.value for h in run.env.hosts}


def test_validators_are_drawn_by_their_secret_seeds(validation):
    """Each other host v with weight validates a completed task with P_v = min(1, target · w_v / (W − w_exec)), drawn
    from its secret seed over the completed tasks in id order; at traffic T <= 100 minAvg(T) = 1, so target = 1
    whatever the executor's reputation (any reputation gives the same pairs)."""
    run, result, data = validation
    env = run.env
    completed = sorted((r for r in data["results"] if r["status"] == "completed"), key=lambda r: r["task_id"])
    assert max(len(data["results"]), data["previous_tasks"]) <= 100
    members = sorted(a for a, w in env.weights.items() if w > 0)
    pool = ValidatorPool(members, [env.secret_seeds[a] for a in members], [env.weights[a] for a in members], [0] * len(members))
    tasks, validators = select_validations([r["executor"] for r in completed], pool, 100, MinAvg((100.0,), (1.0,)))
    expected = {(completed[t]["task_id"], members[v]) for t, v in zip(tasks.tolist(), validators.tolist())}
    assert all(completed[t]["executor"] != members[v] for t, v in zip(tasks.tolist(), validators.tolist()))
    assert {(v["task_id"], v["validator"]) for v in data["verdicts"]} == expected
    assert expected, "some tasks are validated"
    assert result == {"validations": len(expected), "invalidated": sum(o["outcome"] == "invalidated" for o in data["outcomes"].values()),
                      "training_validations": 0, "new_versions": 0}, "the stage chain orders no training"


def test_traffic_is_the_larger_count_of_accepted_tasks_this_epoch_or_the_last(tmp_path_factory, monkeypatch):
    """T measures one thing on both sides (PROTOCOL section 4): accepted tasks, this epoch or the last (it used to compare
    this epoch's completed results with last epoch's accepted tasks)."""
    run = StageRun.prepare(tmp_path_factory, "task_verdicts")
    seen: list[float] = []
    select = GonkaPipelinesV1.select_validations

    def spy(rules, executors, pool, traffic):
        seen.append(traffic)
        return select(rules, executors, pool, traffic)

    with opened(run.layout) as store:  # a quieter last epoch: this epoch's count decides
        store._execute("DELETE FROM tasks WHERE epoch = ? AND task_id NOT IN (SELECT min(task_id) FROM tasks WHERE epoch = ?)",
                       [STAGE_EPOCH - 1, STAGE_EPOCH - 1])
        accepted, before = store.task_count(STAGE_EPOCH), store.task_count(STAGE_EPOCH - 1)
        completed = store._scalar("SELECT count(*) FROM task_results WHERE epoch = ? AND status = 'completed'", [STAGE_EPOCH])
    assert before < completed < accepted, "some tasks expired, so the two measures differ"
    monkeypatch.setattr(GonkaPipelinesV1, "select_validations", spy)
    run.run()
    assert seen == [accepted]


def test_each_validator_signs_one_root_over_its_verdicts(validation):
    run, _, data = validation
    env = run.env
    with run.store() as store:
        roots = store._records("SELECT * FROM record_roots WHERE epoch = ? AND kind = 'task_verdict' ORDER BY signer", [STAGE_EPOCH])
    mine: dict[str, list[dict]] = {}
    for verdict in sorted(data["verdicts"], key=lambda v: v["task_id"]):
        mine.setdefault(verdict["validator"], []).append(verdict)
    assert [r["signer"] for r in roots] == sorted(mine) and len(roots) >= 2
    for root in roots:
        leaves = [record_leaf(env.chain_id, MessageKind.TASK_VERDICT, task_verdict_body(
            STAGE_EPOCH, v["task_id"], v["validator"], v["similarity"], v["passed"], v["reason"]), env.params.tasks.record_encoding)
            for v in mine[root["signer"]]]
        assert (root["root"], root["records"]) == (merkle_root_of_digests(leaves), len(leaves))
        assert verify(env.keys[root["signer"]].public_key, env.chain_id, MessageKind.RECORDS_ROOT,
                      records_root_body(STAGE_EPOCH, root["signer"], MessageKind.TASK_VERDICT, root["root"], len(leaves)),
                      root["signature"])


def test_verdicts_compare_the_executors_output(validation):
    run, _, data = validation
    behaviour = behaviours(run)
    executor = {r["task_id"]: r["executor"] for r in data["results"]}
    similarity: dict[str, float] = {}
    for verdict in data["verdicts"]:
        if behaviour[verdict["validator"]] == "lazy_validator":
            assert (verdict["recomputed"], verdict["passed"], verdict["similarity"], verdict["reason"]) == (False, True, 1.0, "similar")
            continue
        assert verdict["recomputed"] is True
        if behaviour[executor[verdict["task_id"]]] == "garbled_output":
            assert verdict["passed"] is False and verdict["similarity"] <= 0.98 and verdict["reason"] != "similar"
        else:
            assert verdict["passed"] is True and verdict["similarity"] > 0.98 and verdict["reason"] == "similar"
        assert similarity.setdefault(verdict["task_id"], verdict["similarity"]) == verdict["similarity"], "one honest re-run per task"


def test_a_failure_goes_to_a_weighted_vote_and_half_the_weight_invalidates(validation):
    run, _, data = validation
    weights, behaviour = run.env.weights, behaviours(run)
    total = sum(weights.values())
    completed = [r for r in data["results"] if r["status"] == "completed"]
    assert set(data["outcomes"]) == {r["task_id"] for r in completed}, "one outcome per completed task"
    for result in completed:
        outcome = data["outcomes"][result["task_id"]]
        checks = [v for v in data["verdicts"] if v["task_id"] == result["task_id"]]
        failures = sum(not v["passed"] for v in checks)
        invalid_weight = sum(w for a, w in weights.items() if a != result["executor"] and behaviour[a] != "lazy_validator") if failures else 0
        assert (outcome["executor"], outcome["validations"], outcome["failures"], outcome["invalid_vote_weight"]) == \
            (result["executor"], len(checks), failures, invalid_weight)
        expected = "invalidated" if failures and 2 * invalid_weight >= total else "passed" if checks else "unvalidated"
        assert outcome["outcome"] == expected
    invalidated = {o["executor"] for o in data["outcomes"].values() if o["outcome"] == "invalidated"}
    assert {behaviour[a] for a in invalidated} == {"garbled_output"}, "only the garbled executor's tasks are invalidated"
    checked_honestly = {v["task_id"] for v in data["verdicts"] if behaviour[v["validator"]] != "lazy_validator"}
    assert all(o["outcome"] == "invalidated" for t, o in data["outcomes"].items() if o["executor"] in invalidated
               and t in checked_honestly), "a garbled task any recomputing validator checked is invalidated (the lazy one passes it)"


def test_fees_are_shared_equally_by_the_executor_and_the_passing_validators(validation):
    _, _, data = validation
    for result in data["results"]:
        outcome = data["outcomes"].get(result["task_id"])
        shares = [s for s in data["shares"] if s["task_id"] == result["task_id"]]
        if outcome is None or outcome["outcome"] == "invalidated" or not result["cost"]:
            assert shares == [], "an invalidated (or expired) task shares no fee"
            continue
        passing = {v["validator"] for v in data["verdicts"] if v["task_id"] == result["task_id"] and v["passed"]}
        earners = 1 + len(passing)
        expected = {(result["executor"], "executor", result["cost"] // earners + result["cost"] % earners)}
        expected |= {(v, "validator", result["cost"] // earners) for v in passing}
        assert {(s["host"], s["role"], s["amount"]) for s in shares} == expected
        assert sum(s["amount"] for s in shares) == result["cost"]


def protocol_reputation(epochs_served: int, miss_rates: list[float]) -> int:
    """x = epochs served − Σ miss rates above 1 %; rep = floor(100 · trunc2(x / 30)), 0..100."""
    x = Decimal(epochs_served) - sum((Decimal(str(r)) for r in miss_rates if r > 0.01), Decimal(0))
    if x <= 0:
        return 0
    if x > 30:
        return 100
    return math.floor(100 * (x / 30).quantize(Decimal("0.01"), rounding=ROUND_DOWN))


def test_each_hosts_counts_streak_status_and_reputation(validation):
    run, _, data = validation
    weights, behaviour = run.env.weights, behaviours(run)
    assert set(data["host_epochs"]) == {h.address for h in run.env.hosts}
    for address, row in data["host_epochs"].items():
        results = [r for r in data["results"] if r["executor"] == address]
        validated = sorted((o for o in data["outcomes"].values() if o["executor"] == address and o["validations"]),
                           key=lambda o: o["task_id"])
        previous = data["previous"][address]
        streak = 0 if previous["status"] == "INVALID" else previous["consecutive_invalidations"]
        for outcome in validated:
            streak = streak + 1 if outcome["outcome"] == "invalidated" else 0
        own_votes = [v for v in data["verdicts"] if v["validator"] == address]
        contradicted = data["poc_contradictions"].get(address, 0) + sum(
            v["passed"] and data["outcomes"][v["task_id"]]["outcome"] == "invalidated" for v in own_votes)
        served = previous["epochs_served"] + (1 if weights[address] > 0 else 0)
        rates = data["miss_history"].get(address, []) + ([sum(r["status"] == "expired" for r in results) / len(results)] if results else [])
        assert row == {
            "epoch": STAGE_EPOCH, "address": address, "assigned": len(results),
            "missed": sum(r["status"] == "expired" for r in results),
            "validated": len(validated), "invalidated": sum(o["outcome"] == "invalidated" for o in validated),
            "consecutive_invalidations": streak,
            "required_validations": len(own_votes), "done_validations": len(own_votes),
            "contradicted_votes": contradicted,
            "status": host_status(streak, len(validated), sum(o["outcome"] == "invalidated" for o in validated),
                                  n_executed=sum(r["status"] == "completed" for r in results),
                                  false_positive_rate=0.05, ramping_tasks=10, invalid_streak_probability=1e-6, z_threshold=1.0).value,
            "reputation": protocol_reputation(served, rates), "epochs_served": served,
        }, behaviour[address]
    garbled_address, garbled = next((a, r) for a, r in data["host_epochs"].items() if behaviour[a] == "garbled_output")
    checked_honestly = {v["task_id"] for v in data["verdicts"] if behaviour[v["validator"]] != "lazy_validator"}
    garbled_tasks = [o for o in data["outcomes"].values() if o["executor"] == garbled_address and o["validations"]]
    assert garbled_tasks and {o["outcome"] for o in garbled_tasks if o["task_id"] in checked_honestly} == {"invalidated"}
    assert all(o["outcome"] == "passed" for o in garbled_tasks if o["task_id"] not in checked_honestly), \
        "a garbled task only the lazy validator checked passes (its vote is 'valid')"
    assert garbled["invalidated"] == len(checked_honestly & {o["task_id"] for o in garbled_tasks}) >= 1
    assert garbled["status"] == "RAMPING", "0.05^streak is still above 1e-6 and fewer than 10 tasks were validated"
    assert garbled["missed"] >= 1
    lazy = next(r for a, r in data["host_epochs"].items() if behaviour[a] == "lazy_validator")
    assert lazy["contradicted_votes"] >= 1, "it voted valid on the fake sprint the network rejected"
    assert all(r["contradicted_votes"] == 0 for a, r in data["host_epochs"].items() if behaviour[a] == "honest")


def test_judging_runs_with_the_chain_closed(validation):
    run, _, data = validation
    behaviour = behaviours(run)
    judged = {v["task_id"] for v in data["verdicts"] if behaviour[v["validator"]] != "lazy_validator"}
    assert run.opener.opens == 2, "one read of results and history, one write of verdicts, outcomes, shares, host epochs"
    assert sum(run.compute.scored) == len(judged), "one honest re-run per task some honest validator checks"
    assert dict(run.compute.calls) == {"score": math.ceil(len(judged) / SCORED_PER_ORDER)}, "re-runs go in batches of one version"


def test_rerunning_the_stage_is_idempotent(tmp_path_factory):
    assert_idempotent(tmp_path_factory, "task_verdicts")
