"""task_results (PROTOCOL section 4, Assignment and Execution): hosts commit to their secret seeds, each task runs on an
executor drawn ∝ weight among the hosts serving its model (within capacity · tasks_per_capacity), the cost
(prompt + completion tokens) · price is kept in escrow and the rest refunded; tasks over capacity expire, fully refunded."""

from __future__ import annotations

import pytest

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.protocol.assignment import assign_executors
from gonka_pipelines.protocol.crypto import MessageKind, hash_value, sha256_hex, verify
from gonka_pipelines.protocol.merkle import merkle_root_of_digests
from gonka_pipelines.protocol.messages import result_body, seed_commitment_body
from gonka_pipelines.protocol.record_roots import record_leaf, records_root_body
from gonka_pipelines.stages.environment import secret_seed

from stage_kit import STAGE_EPOCH, STAGE_HOSTS, StageRun, assert_idempotent, task_count

CAPACITY = {h["name"]: h["capacity"] for h in STAGE_HOSTS}


@pytest.fixture(scope="module")
def execution(tmp_path_factory):
    run = StageRun.prepare(tmp_path_factory, "task_results")
    result = run.run()
    with run.store() as store:
        tasks = {t["task_id"]: t for t in store._records("SELECT * FROM tasks WHERE epoch = ? ORDER BY task_id", [STAGE_EPOCH])}
        results = store._records(
            "SELECT r.*, h.name FROM task_results r LEFT JOIN hosts h ON h.address = r.executor WHERE r.epoch = ? ORDER BY r.task_id",
            [STAGE_EPOCH])
        commitments = store._records("SELECT * FROM seed_commitments WHERE epoch = ? ORDER BY host", [STAGE_EPOCH])
        refunds = store._records("SELECT * FROM transfers WHERE epoch = ? AND stage = 'task_results' ORDER BY ref", [STAGE_EPOCH])
    return run, result, tasks, results, commitments, refunds


def test_every_host_commits_to_its_secret_seed(execution):
    run, _, _, _, commitments, _ = execution
    env = run.env
    assert [c["host"] for c in commitments] == sorted(h.address for h in env.hosts)
    for row in commitments:
        seed = secret_seed(env.keys[row["host"]], env.chain_id, STAGE_EPOCH, env.prev_hash)
        assert row["commitment"] == sha256_hex(bytes.fromhex(seed))
        assert verify(env.keys[row["host"]].public_key, env.chain_id, MessageKind.SEED_COMMIT,
                      seed_commitment_body(STAGE_EPOCH, row["commitment"]), row["signature"])


def test_every_task_gets_one_executor_drawn_by_weight(execution, tmp_path_factory):
    run, result, tasks, results, _, _ = execution
    env = run.env
    assert [r["task_id"] for r in results] == sorted(tasks) and len(tasks) == task_count(tmp_path_factory)
    serving = [h.address for h in env.hosts if "llm-tiny" in h.models and env.weights[h.address] > 0]
    expected = assign_executors(env.prev_hash, sorted(tasks), serving, [env.weights[a] for a in serving])
    assert [r["executor"] for r in results] == expected
    assert "host-fake" not in {r["name"] for r in results}, "weight 0 (its sprint was rejected): it is never drawn"
    assert result == {"completed": sum(r["status"] == "completed" for r in results),
                      "expired": sum(r["status"] == "expired" for r in results), "trained": 0, "training_expired": 0}


def test_an_executor_runs_up_to_its_capacity_in_task_id_order_and_the_rest_expire(execution):
    run, _, _, results, _, _ = execution
    per_capacity = run.env.params.tasks.tasks_per_capacity
    assert per_capacity == 1
    by_executor: dict[str, list[str]] = {}
    for row in results:
        by_executor.setdefault(row["name"], []).append(row["status"])
    for name, statuses in by_executor.items():
        slots = CAPACITY[name] * per_capacity
        assert statuses == ["completed"] * min(slots, len(statuses)) + ["expired"] * max(0, len(statuses) - slots), name
    assert by_executor["host-garbled"].count("expired") >= 1, "this epoch overflows host-garbled's 2 slots"


def test_completed_tasks_pay_prompt_plus_completion_tokens_and_refund_the_rest(execution):
    run, _, tasks, results, _, refunds = execution
    env = run.env
    price = env.params.price_per_token
    assert price == 100
    completed = [r for r in results if r["status"] == "completed"]
    assert completed
    for row in completed:
        task = tasks[row["task_id"]]
        assert row["completion_tokens"] == len(row["output_tokens"]) <= task["max_tokens"]
        assert len(row["top_ids"]) == len(row["top_logprobs"]) == len(row["output_tokens"])
        assert all(len(ids) == len(lps) == 5 for ids, lps in zip(row["top_ids"], row["top_logprobs"])), "top-5 at every position"
        assert row["cost"] == (task["prompt_tokens"] + row["completion_tokens"]) * price
        assert row["refund"] == task["escrow"] - row["cost"] >= 0
    expected = sorted((r["task_id"], tasks[r["task_id"]]["developer"], r["refund"], -r["refund"],
                       "refund" if r["status"] == "completed" else "expiry_refund", hash_value(["refund", r["task_id"]]))
                      for r in results if r["refund"])
    assert sorted((t["ref"], t["account"], t["balance_delta"], t["escrow_delta"], t["kind"], t["transfer_id"])
                  for t in refunds) == expected


def test_each_executor_signs_one_root_over_its_completed_results(execution):
    """One record_roots row per executor that completed a task: the Merkle root over its results' messages in task id
    order, their count, and its signature over both; no signature per result."""
    run, _, _, results, _, _ = execution
    env = run.env
    with run.store() as store:
        roots = store._records("SELECT * FROM record_roots WHERE epoch = ? AND kind = 'result' ORDER BY signer", [STAGE_EPOCH])
    completed: dict[str, list[dict]] = {}
    for row in results:
        if row["status"] == "completed":
            completed.setdefault(row["executor"], []).append(row)
    assert [r["signer"] for r in roots] == sorted(completed) and len(roots) >= 2
    for root in roots:
        mine = completed[root["signer"]]
        leaves = [record_leaf(env.chain_id, MessageKind.RESULT, result_body(
            r["task_id"], r["executor"], r["output_tokens"], r["top_ids"], r["top_logprobs"]), env.params.tasks.record_encoding)
            for r in mine]
        assert (root["root"], root["records"]) == (merkle_root_of_digests(leaves), len(mine))
        assert verify(env.keys[root["signer"]].public_key, env.chain_id, MessageKind.RECORDS_ROOT,
                      records_root_body(STAGE_EPOCH, root["signer"], MessageKind.RESULT, root["root"], len(mine)),
                      root["signature"])


def test_expired_tasks_are_refunded_in_full_and_unsigned(execution):
    _, _, tasks, results, _, refunds = execution
    expired = [r for r in results if r["status"] == "expired"]
    assert expired
    for row in expired:
        assert (row["output_tokens"], row["completion_tokens"], row["cost"]) == ([], 0, 0)
        assert row["refund"] == tasks[row["task_id"]]["escrow"]
    assert {t["ref"] for t in refunds if t["kind"] == "expiry_refund"} == {r["task_id"] for r in expired}


def test_outputs_are_the_served_model_or_for_garbled_output_another_model(execution):
    run, _, tasks, results, _, _ = execution
    compute = run.compute.inner
    for row in results:
        if row["status"] != "completed":
            continue
        task = tasks[row["task_id"]]
        honest = compute.generate(task["model"], task["version"] or run.env.served[task["model"]], row["executor"], "honest", [task["prompt"]],
                                  task["max_tokens"])["tokens"][0].as_py()
        same = honest == row["output_tokens"]
        assert same is (row["name"] != "host-garbled"), row["name"]


def test_generation_runs_with_the_chain_closed(execution):
    run, _, tasks, results, _, _ = execution
    groups = {(r["executor"], tasks[r["task_id"]]["model"], tasks[r["task_id"]]["max_tokens"]) for r in results if r["status"] == "completed"}
    assert run.opener.opens == 2, "one read of the tasks, one write of the results"
    assert dict(run.compute.calls) == {"generate": len(groups)}, "one batched generate per executor, model and max_tokens"


def test_rerunning_the_stage_is_idempotent(tmp_path_factory):
    assert_idempotent(tmp_path_factory, "task_results")


class _RollBack(Exception):
    """Raised inside a transaction to undo what a test did to the module's chain."""


def test_checked_outputs_follow_the_ids_given_and_keep_only_ids_with_a_result_and_a_task(execution):
    """What validation reads of the tasks it checks: in the order asked, each row its task's result and prompt; an id
    missing from results or from tasks is left out, and a result held twice comes twice, each beside its task (as one
    join of both gives them: the two reads are set side by side only where they pair up one to one)."""
    run, _, tasks, results, _, _ = execution
    completed = {r["task_id"]: r for r in results if r["status"] == "completed"}
    asked = list(completed)[::-1][:7] + ["no-such-task"]

    def assert_beside_their_own(rows):
        for row in rows:
            result, task = completed[row["task_id"]], tasks[row["task_id"]]
            assert (row["output_tokens"], row["top_ids"], row["top_logprobs"]) == (
                result["output_tokens"], result["top_ids"], result["top_logprobs"])
            assert (row["prompt"], row["model"], row["version"], row["max_tokens"]) == (
                task["prompt"], task["model"], task["version"], task["max_tokens"])

    with ChainStore.open(run.layout.database) as store:  # writable (the changes below are rolled back), not counted
        rows = store.checked_outputs(asked).to_pylist()
        assert [row["task_id"] for row in rows] == asked[:-1]
        assert_beside_their_own(rows)
        with pytest.raises(_RollBack), store.transaction():
            store._execute("DELETE FROM tasks WHERE task_id = ?", [asked[1]])
            store._execute("DELETE FROM task_results WHERE task_id = ?", [asked[4]])
            store._execute("INSERT INTO task_results SELECT * FROM task_results WHERE task_id = ?", [asked[2]])
            rows = store.checked_outputs(asked).to_pylist()
            raise _RollBack
        assert [row["task_id"] for row in rows] == [asked[i] for i in (0, 2, 2, 3, 5, 6)]
        assert_beside_their_own(rows)
        assert store.checked_outputs(asked)["task_id"].to_pylist() == asked[:-1], "the rows are back"
