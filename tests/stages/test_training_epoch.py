"""Training tasks through a whole epoch (PROTOCOL section 4, "Training tasks"): intake with escrow, execution through
accelerate with content-addressed checkpoints, validators re-running one checkpoint interval each, the fee shared, and a
new model version with its lineage and held-out loss; bad orders are kept with their reason codes."""

from __future__ import annotations

import dataclasses

import pytest

from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.compute.training import read_checkpoint

from support.chains import opened, run_stages, training_chain

HOSTS = [("host-alpha", 2), ("host-bravo", 2), ("host-charlie", 1)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    layout, submitter, genesis_version, shards = training_chain(tmp_path_factory.mktemp("training"), HOSTS)
    shards = shards[:2]
    with opened(layout) as store:
        submitter(2, "dev-ada")
        ordered = submitter.train(nonce=2, base_version=genesis_version, shards=shards)
        refused = {"unknown_shard": submitter.train(nonce=3, base_version=genesis_version, shards=["f" * 64]),
                   "unknown_model_version": submitter.train(nonce=4, base_version="e" * 64, shards=shards),
                   "steps_out_of_range": submitter.train(nonce=5, base_version=genesis_version, shards=shards, steps=0)}
        results = run_stages(store, layout, 1)
        yield store, layout, results, genesis_version, shards, ordered, refused


def test_bad_orders_are_kept_with_their_own_reason(trained):
    store, *_, refused = trained
    rows = dict(store._query("SELECT submission_id, reason FROM rejected_tasks WHERE epoch = 1"))
    assert {rows[sid]: reason for reason, sid in refused.items()} == {reason: reason for reason in refused}


def test_collect_counts_the_order_apart_and_its_escrow_with_the_tasks(trained):
    """The collect summary adds up: 2 inference tasks, 1 training order, 3 refused orders of 6 submissions, and its
    escrow is every escrow taken from balances (the tasks' and the order's)."""
    store, _, results, *_ = trained
    summary = results["epoch_tasks"]
    assert (summary.submitted, summary.accepted, summary.trainings, sum(summary.rejected_by_reason.values())) == (6, 2, 1, 3)
    (order_escrow,) = store._query("SELECT escrow FROM training_tasks WHERE epoch = 1")[0]
    tasks_escrow = store._scalar("SELECT sum(escrow) FROM tasks WHERE epoch = 1")
    assert order_escrow == 4 * 4 * 256 * 100 and summary.escrowed == tasks_escrow + order_escrow


def test_the_order_is_escrowed_executed_and_its_checkpoints_stored(trained):
    store, layout, results, genesis_version, shards, ordered, _ = trained
    (task,) = store._records("SELECT * FROM training_tasks WHERE epoch = 1")
    assert task["submission_id"] == ordered and task["base_version"] == genesis_version and list(task["shards"]) == shards
    assert task["tokens"] == 4 * 4 * 256 and task["escrow"] == task["tokens"] * 100
    (result,) = store._records("SELECT * FROM training_results WHERE epoch = 1")
    assert result["status"] == "completed" and list(result["checkpoint_steps"]) == [4]
    assert result["version"] == result["checkpoints"][-1] and len(result["losses"]) == 4
    assert result["cost"] == task["escrow"] and result["refund"] == 0
    assert read_checkpoint(layout.checkpoints, result["version"]), "stored under its hash"
    assert results["task_results"]["trained"] == 1


def test_validators_re_ran_an_interval_and_the_new_version_is_registered(trained):
    store, _, results, genesis_version, shards, _, _ = trained
    verdicts = store._records("SELECT * FROM training_verdicts WHERE epoch = 1")
    assert verdicts and all(v["passed"] and v["recomputed"] and v["reason"] == "reproduced" for v in verdicts)
    assert {(v["first_step"], v["last_step"]) for v in verdicts} == {(0, 4)}
    (result,) = store._records("SELECT * FROM training_results WHERE epoch = 1")
    (outcome,) = store._records("SELECT * FROM task_outcomes WHERE task_id = ?", [result["task_id"]])
    assert outcome["outcome"] == "passed" and outcome["validations"] == len(verdicts)
    version = store._records("SELECT * FROM model_versions WHERE epoch = 1")[0]
    genesis_loss = store._scalar("SELECT eval_loss FROM model_versions WHERE epoch = 0")
    assert (version["version"], version["parent"], version["task_id"], list(version["shards"])) == (
        result["version"], genesis_version, result["task_id"], shards)
    assert version["final_loss"] == result["losses"][-1]
    assert version["eval_loss"] == verdicts[0]["eval_loss"] < genesis_loss, "training lowered the held-out loss"
    assert results["task_verdicts"]["new_versions"] == 1


def test_the_fee_is_shared_and_the_chain_verifies(trained):
    store, *_ = trained
    (result,) = store._records("SELECT * FROM training_results WHERE epoch = 1")
    shares = store._records("SELECT host, role, amount FROM fee_shares WHERE task_id = ?", [result["task_id"]])
    assert sum(s["amount"] for s in shares) == result["cost"] and shares[0]["role"] in ("executor", "validator")
    assert {s["host"] for s in shares if s["role"] == "executor"} == {result["executor"]}
    report = verify_chain(store)
    assert (report.head, report.first_problem) == (1, None)


ADVERSARIES = {"host-lazy-trainer": ("lazy_trainer", "checkpoint_mismatch"), "host-fabricator": ("fabricated_loss", "loss_mismatch"),
               "host-wrong-shards": ("wrong_shards", "checkpoint_mismatch")}


def cheating_epoch(root, steps: int, wrap=lambda compute: compute):
    """Three honest hosts and one of each training adversary; 36 small orders (seeds 0..35) spread over them by the
    executor draw (each of the 6 equal hosts gets none with probability (5/6)^36 = 0.14 %); epoch 1 run with the torch
    compute, wrapped by `wrap`. Returns the chain's layout."""
    from gonka_pipelines.stages.environment import build_environment, holding, quiet
    from gonka_pipelines.stages.pipeline import run_stages as pipeline_stages

    hosts = [("host-alpha", 2), ("host-bravo", 2), ("host-charlie", 2)] + [(n, 2, b) for n, (b, _) in ADVERSARIES.items()]
    layout, submitter, genesis_version, shards = training_chain(root, hosts)
    for seed in range(36):
        submitter.train(nonce=seed, base_version=genesis_version, shards=shards[:1], steps=steps, batch_size=2, seed=seed)
    with opened(layout) as store:
        env = build_environment(store, layout, 1)
        pipeline_stages(dataclasses.replace(env, compute=wrap(env.compute)), holding(store), quiet)
    return layout


@pytest.fixture(scope="module")
def cheated(tmp_path_factory):
    with opened(cheating_epoch(tmp_path_factory.mktemp("training-adversaries"), steps=2)) as store:
        yield store


def test_each_training_adversary_is_caught_when_checked_and_honest_work_passes(cheated):
    store = cheated
    rows = store._records(
        """SELECT h.name, r.task_id, o.outcome, o.validations, r.version FROM training_results r JOIN hosts h ON h.address = r.executor
           JOIN task_outcomes o USING (task_id) ORDER BY r.task_id""")
    reasons = {(task, reason.split(":")[0]) for task, reason in store._query(
        "SELECT task_id, reason FROM training_verdicts WHERE recomputed AND NOT passed")}
    assert set(ADVERSARIES) <= {r["name"] for r in rows if r["validations"]}, "every kind of cheat was drawn for validation"
    for row in rows:
        if not row["validations"]:
            continue
        if row["name"] in ADVERSARIES:
            assert row["outcome"] == "invalidated", row["name"]
            assert (row["task_id"], ADVERSARIES[row["name"]][1]) in reasons, row["name"]
        else:
            assert row["outcome"] == "passed", row["name"]
    versions = {v for (v,) in store._query("SELECT task_id FROM model_versions WHERE epoch = 1")}
    assert versions == {r["task_id"] for r in rows if r["outcome"] == "passed"}, "only passed training becomes a version"


def test_caught_trainers_are_refunded_to_the_developer_and_counted_by_the_status_machine(cheated):
    store = cheated
    invalidated = {task for (task,) in store._query("SELECT task_id FROM task_outcomes WHERE outcome = 'invalidated'")}
    refunded = {ref for (ref,) in store._query("SELECT ref FROM transfers WHERE kind = 'fee_refund'")}
    assert invalidated and invalidated <= refunded
    counts = dict(store._query("SELECT h.name, e.invalidated FROM host_epochs e JOIN hosts h USING (address) WHERE e.epoch = 1"))
    assert all(counts[name] >= 1 for name in ADVERSARIES) and all(counts[n] == 0 for n in ("host-alpha", "host-bravo", "host-charlie"))
    assert verify_chain(store).first_problem is None


def test_an_expired_order_is_refunded_once_however_often_execution_runs(tmp_path):
    """A lone host (capacity 1, a 64-step budget) takes the first 40-step order and lets the second expire with a full
    refund; re-running the execution stage replaces its rows and refunds rather than adding to them."""
    from gonka_pipelines.stages.environment import build_environment, holding, quiet
    from gonka_pipelines.stages.registry import BY_NAME

    layout, submitter, version, shards = training_chain(tmp_path, [("solo", 1)])
    for nonce in (0, 1):
        submitter.train(nonce=nonce, base_version=version, shards=shards[:1], steps=40, batch_size=1, seed=nonce)
    with opened(layout) as store:
        run_stages(store, layout, 1, through="task_results")
        refunds = store._query("SELECT * FROM transfers WHERE kind = 'expiry_refund' ORDER BY ALL")
        assert len(refunds) == 1 and dict(store._query("SELECT status, count(*) FROM training_results GROUP BY 1")) == {
            "completed": 1, "expired": 1}
        BY_NAME["task_results"].run(build_environment(store, layout, 1), holding(store), quiet)
        assert store._query("SELECT * FROM transfers WHERE kind = 'expiry_refund' ORDER BY ALL") == refunds


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_missing_or_altered_checkpoint_fails_its_executor_not_the_epoch(tmp_path, damage, every_task_checked):
    """After execution the executor's checkpoint files go missing or are altered: validation names the file and hash,
    every honest validator fails the task, the developer is refunded, no version is registered, and the epoch finalizes."""
    from gonka_pipelines.stages.environment import build_environment, holding, quiet
    from gonka_pipelines.stages.registry import STAGE_NAMES, STAGES

    layout, submitter, version, shards = training_chain(tmp_path, HOSTS)
    submitter.train(nonce=0, base_version=version, shards=shards[:1], steps=8)
    with opened(layout) as store:
        env = build_environment(store, layout, 1)
        executed = STAGE_NAMES.index("task_results") + 1
        for stage in STAGES[:executed]:
            stage.run(env, holding(store), quiet)
        (result,) = store._records("SELECT * FROM training_results WHERE epoch = 1")
        for checkpoint in result["checkpoints"]:
            path = layout.checkpoints / f"{checkpoint}.safetensors"
            path.unlink() if damage == "missing" else path.write_bytes(path.read_bytes()[:-7] + b"garbage")
        for stage in STAGES[executed:]:
            stage.run(env, holding(store), quiet)
        verdicts = store._records("SELECT * FROM training_verdicts WHERE epoch = 1")
        assert verdicts and not any(v["passed"] for v in verdicts)
        detail = "is missing" if damage == "missing" else "does not hash to"
        for verdict in verdicts:
            assert verdict["reason"].startswith("checkpoint_unreadable: ") and detail in verdict["reason"], verdict["reason"]
            assert str(layout.checkpoints) in verdict["reason"], "the message names the file"
            assert any(c[:12] in verdict["reason"] for c in result["checkpoints"]), "and the hash"
        (outcome,) = store._records("SELECT * FROM task_outcomes WHERE task_id = ?", [result["task_id"]])
        assert outcome["outcome"] == "invalidated" and outcome["executor"] == result["executor"]
        assert store._scalar("SELECT count(*) FROM model_versions WHERE epoch = 1") == 0
        assert store.served_versions(1) == {"llm-tiny": version}, "the genesis version still serves"
        refund = store._scalar("SELECT sum(balance_delta) FROM transfers WHERE ref = ? AND kind = 'fee_refund'",
                               [result["task_id"]])
        assert refund == store._scalar("SELECT escrow FROM training_tasks WHERE task_id = ?", [result["task_id"]])
        assert store.epoch_status(1) == "finalized" and verify_chain(store).first_problem is None


class NotBitExact:
    """The torch compute, but comparing as a CUDA validator must (re-runs not bit-identical): within the tolerances."""

    def __init__(self, inner):
        self.inner = inner

    bit_exact = False

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_where_re_runs_are_not_bit_identical_validators_compare_within_the_tolerances(tmp_path, every_task_checked):
    """The CUDA comparison, exercised on CPU: honest training passes within training.weight_tolerance and loss_tolerance,
    and each training adversary still fails with the size of the difference named."""
    with opened(cheating_epoch(tmp_path, steps=4, wrap=NotBitExact)) as store:
        rows = store._records(
            """SELECT h.name, v.passed, v.reason FROM training_verdicts v JOIN training_results r USING (task_id)
               JOIN hosts h ON h.address = r.executor WHERE v.recomputed""")
        assert {r["name"] for r in rows} >= set(ADVERSARIES) | {"host-alpha"}, "honest and cheating work was checked"
        for row in rows:
            if row["name"] in ADVERSARIES:
                assert not row["passed"] and row["reason"].startswith(ADVERSARIES[row["name"]][1]), row
                assert "away from" in row["reason"] and "tolerance" in row["reason"], row["reason"]
            else:
                assert row["passed"] and row["reason"] == "reproduced within tolerance", row
        assert verify_chain(store).first_problem is None
