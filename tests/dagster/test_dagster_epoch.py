"""One epoch of the demo network through Dagster: every asset materialized with the metadata it promises, every
asset check evaluated and passed; and the supply check really blocks the block when units appear from nowhere."""

from __future__ import annotations

import dagster as dg
import pytest

from gonka_pipelines.chain.invariants import check_epoch_supply
from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.defs.launch import run_next_epoch
from gonka_pipelines.protocol.block import signature_set_hash
from gonka_pipelines.protocol.rewards import SupplyInvariantError
from gonka_pipelines.reports.units import gnk
from gonka_pipelines.simulation.workload import TRAINING_ORDERS, submit_demo_workload

from support.chains import copy_chain, create_chain, opened, run_stages, small_template, submit_tasks
from support.config import demo_network, fast_genesis

pytestmark = pytest.mark.slow

ASSET_METADATA = {
    "epoch_tasks": {"dagster/row_count", "submitted", "accepted", "trainings", "rejected", "escrowed", "rejected_by_reason"},
    "sprint_batches": {"dagster/row_count", "batches", "rejected_batches", "claimed_hits"},
    "sprint_verdicts": {"dagster/row_count", "verdicts", "invalid_votes"},
    "epoch_weights": {"dagster/row_count", "total_weight", "sprints_rejected", "weights"},
    "task_results": {"dagster/row_count", "completed", "expired", "trained", "training_expired"},
    "task_verdicts": {"dagster/row_count", "validations", "invalidated_tasks", "training_validations", "new_model_versions",
                      "hosts_invalid", "statuses"},
    "model_versions": {"dagster/row_count", "new_versions", "training_tasks", "trainings_invalidated", "served_version",
                       "served_eval_loss", "served_trained_in_epoch", "lineage", "loss_curves", "best_new_eval_loss",
                       "best_new_final_loss", "train_loss_0pct", "train_loss_50pct", "train_loss_100pct"},
    "rewards": {"dagster/row_count", "emission_minted", "emission_scheduled", "burned", "fees", "paid", "hosts_caught",
                "payouts", "derivations", "emission_minted_gnk", "paid_gnk", "fees_gnk", "burned_gnk",
                "payout_gnk/host-alpha", "payout_gnk/host-lazy"},
    "block_proposal": {"dagster/row_count", "height", "block_hash", "prev_hash", "signers", "roots"},
    "block": {"height", "block_hash", "prev_hash", "timestamp", "signers", "signed_weight", "inference_tasks",
              "training_tasks", "next_epoch", "signatures_hash"},
}
BLOCKING_CHECKS = {("rewards", "supply_conserved"), ("rewards", "payouts_have_lineage"),
                   ("block_proposal", "block_links_to_head"), ("block_proposal", "block_rederives"),
                   ("block_proposal", "signed_messages_verify"), ("block_proposal", "block_signatures_verify")}
ALL_CHECKS = BLOCKING_CHECKS | {("rewards", "no_honest_host_flagged")}


def run_events(instance: dg.DagsterInstance, run_id: str):
    """(materializations by asset name, check evaluations by (asset name, check name)) of one run."""
    materializations, checks = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            materializations[materialization.asset_key.to_user_string()] = materialization
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            checks[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = evaluation
    return materializations, checks


def value(metadata, key):
    entry = metadata[key]
    return getattr(entry, "value", entry)


@pytest.fixture(scope="module")
def instance():
    instance = dg.DagsterInstance.ephemeral()
    yield instance
    instance.dispose()


@pytest.fixture(scope="module")
def demo_epoch(tmp_path_factory, instance):
    """The demo network (fast local profile) at genesis, the demo workload submitted, epoch 1 run through Dagster."""
    base = tmp_path_factory.mktemp("dagster-epoch")
    network = demo_network()
    layout = create_chain(base / "chain", fast_genesis(base / "config"), network)
    with opened(layout) as store:
        kinds = submit_demo_workload(store, layout, network, 1)
    run = run_next_epoch(layout, instance)
    materializations, checks = run_events(instance, run.run_id)
    return layout, kinds, run, materializations, checks


def test_the_epoch_run_succeeds_and_finalizes_block_1(demo_epoch, instance):
    layout, _, run, _, _ = demo_epoch
    assert (run.epoch, run.success) == (1, True)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    with opened(layout, read_only=True) as store:
        assert store.head().height == 1 and store.epoch_status(1) == "finalized"
        report = verify_chain(store)
        assert (report.blocks_verified, report.first_problem) == (2, None)


def test_every_asset_is_materialized_with_its_metadata(demo_epoch):
    _, _, _, materializations, _ = demo_epoch
    assert set(materializations) == set(ASSET_METADATA)
    for asset, keys in ASSET_METADATA.items():
        materialization = materializations[asset]
        assert materialization.partition == "1", asset
        assert keys <= set(materialization.metadata), (asset, keys - set(materialization.metadata))


def test_metadata_values_match_the_chain(demo_epoch):
    layout, kinds, _, materializations, _ = demo_epoch
    meta = {asset: m.metadata for asset, m in materializations.items()}
    with opened(layout, read_only=True) as store:
        def one(sql: str):
            return store._scalar(sql, [1])

        tasks = meta["epoch_tasks"]
        assert value(tasks, "submitted") == sum(kinds.values())
        assert value(tasks, "accepted") == one("SELECT count(*) FROM tasks WHERE epoch = ?") == kinds["honest"]
        rejected = sum(kinds.values()) - kinds["honest"] - kinds["training"]
        assert value(tasks, "rejected") == one("SELECT count(*) FROM rejected_tasks WHERE epoch = ?") == rejected
        assert value(tasks, "trainings") == one("SELECT count(*) FROM training_tasks WHERE epoch = ?") == kinds["training"] == TRAINING_ORDERS
        assert value(tasks, "escrowed") == one(
            "SELECT (SELECT sum(escrow) FROM tasks WHERE epoch = $1) + (SELECT sum(escrow) FROM training_tasks WHERE epoch = $1)")
        assert value(tasks, "rejected_by_reason") == dict(store._query(
            "SELECT reason, count(*) FROM rejected_tasks WHERE epoch = 1 GROUP BY 1"))

        batches = meta["sprint_batches"]
        assert value(batches, "batches") == value(batches, "dagster/row_count") == one("SELECT count(*) FROM poc_batches WHERE epoch = ?")
        assert value(batches, "rejected_batches") == 2, "host-fake's duplicate and late batches"
        assert value(batches, "claimed_hits") == one(
            "SELECT sum(len(nonces)) FROM poc_batches WHERE epoch = ? AND status = 'accepted'")

        verdicts = meta["sprint_verdicts"]
        assert value(verdicts, "verdicts") == one("SELECT count(*) FROM poc_verdicts WHERE epoch = ?")
        assert value(verdicts, "invalid_votes") == one("SELECT count(*) FROM poc_verdicts WHERE epoch = ? AND NOT valid") > 0

        weights = meta["epoch_weights"]
        assert value(weights, "total_weight") == one("SELECT sum(weight) FROM epoch_weights WHERE epoch = ?") > 0
        assert value(weights, "sprints_rejected") == 1, "host-fake"
        table = value(weights, "weights")
        assert [c.name for c in table.schema.columns][-2:] == ["weight", "share"]
        assert [r.data["weight"] for r in table.records] == sorted((r.data["weight"] for r in table.records), reverse=True)
        fake = next(r.data for r in table.records if r.data["host"] == "host-fake")
        assert (fake["accepted"], fake["weight"]) == (False, value(weights, "weight/host-fake"))

        results = meta["task_results"]
        assert value(results, "completed") + value(results, "expired") == kinds["honest"]
        assert value(results, "completed") == one("SELECT count(*) FROM task_results WHERE epoch = ? AND status = 'completed'")

        validation = meta["task_verdicts"]
        assert value(validation, "validations") == one("SELECT count(*) FROM task_verdicts WHERE epoch = ?")
        assert value(validation, "invalidated_tasks") == one(
            "SELECT count(*) FROM task_outcomes WHERE epoch = ? AND outcome = 'invalidated'")
        assert value(validation, "statuses") == dict(store._query("SELECT status, count(*) FROM host_epochs WHERE epoch = 1 GROUP BY 1"))
        assert value(results, "trained") == one("SELECT count(*) FROM training_results WHERE epoch = ? AND status = 'completed'") == TRAINING_ORDERS
        assert value(validation, "training_validations") == one("SELECT count(*) FROM training_verdicts WHERE epoch = ?") > 0
        assert value(validation, "new_model_versions") == one("SELECT count(*) FROM model_versions WHERE epoch = ?")

        versions = meta["model_versions"]
        new = store._records("SELECT * FROM model_versions WHERE epoch = 1 ORDER BY eval_loss, version")
        assert value(versions, "new_versions") == len(new) > 0 and value(versions, "training_tasks") == TRAINING_ORDERS
        (served,) = store.served_versions(1).values()
        assert value(versions, "served_version") == served[:12] == new[0]["version"][:12], "the best new version is served"
        assert value(versions, "served_eval_loss") == new[0]["eval_loss"] < store._scalar(
            "SELECT eval_loss FROM model_versions WHERE epoch = 0"), "training lowered the held-out loss"
        curve = store._scalar("SELECT losses FROM training_results WHERE task_id = ?", [new[0]["task_id"]])
        assert (value(versions, "train_loss_0pct"), value(versions, "train_loss_100pct")) == (curve[0], curve[-1])
        assert value(versions, "best_new_final_loss") == curve[-1]
        lineage = value(versions, "lineage").records
        assert {r.data["version"] for r in lineage} == {v["version"][:12] for v in new}
        assert all(r.data["epoch"] == 1 and r.data["task"] and r.data["shards"].startswith("train-") for r in lineage)

        rewards = meta["rewards"]
        emission = store._records("SELECT * FROM emissions WHERE epoch = 1")[0]
        assert value(rewards, "emission_minted") == emission["minted"] == emission["scheduled"] == value(rewards, "emission_scheduled")
        assert value(rewards, "burned") == emission["burned"]
        assert value(rewards, "paid") == one("SELECT sum(payout) FROM rewards WHERE epoch = ?")
        assert value(rewards, "paid_gnk") == value(rewards, "paid") / 10**9
        payouts = {r["name"]: r for r in store.payouts(1)}
        table = value(rewards, "payouts")
        assert [r.data["host"] for r in table.records] == sorted(payouts, key=lambda n: (-payouts[n]["weight"], n))
        for record in table.records:
            row = payouts[record.data["host"]]
            assert (record.data["payout (base units)"], record.data["payout (GNK)"]) == (row["payout"], gnk(row["payout"], 10**9))
            assert value(rewards, f"payout_gnk/{row['name']}") == row["payout"] / 10**9
        assert isinstance(value(rewards, "emission_minted"), int), "integer metrics stay integers (plotted as such)"
        assert value(rewards, "hosts_caught") >= 2, "host-fake (sprint) and host-lazy (claim) are caught in epoch 1"
        derivations = value(rewards, "derivations")
        for (name,) in store._query("SELECT name FROM hosts"):
            assert f"### {name} — epoch 1: payout" in derivations

        block = store.block(1)
        proposal = meta["block_proposal"]
        assert (value(proposal, "height"), value(proposal, "block_hash"), value(proposal, "prev_hash")) == (
            1, block["hash"], store.block(0)["hash"])
        invalid = one("SELECT count(*) FROM host_epochs WHERE epoch = ? AND status = 'INVALID'")
        assert value(proposal, "signers") == len(block["signatures"]) == 9 - invalid, \
            "every genesis host signs with weight 1, but one found INVALID in the epoch"
        assert value(proposal, "roots") == block["header"]["roots"]
        final = meta["block"]
        assert (value(final, "height"), value(final, "block_hash"), value(final, "next_epoch")) == (1, block["hash"], "2")
        assert value(final, "signatures_hash") == signature_set_hash(block["signatures"])
        assert (value(final, "prev_hash"), value(final, "timestamp")) == (block["header"]["prev_hash"], block["header"]["timestamp"])
        assert value(final, "signers") == len(block["signatures"]) and value(final, "inference_tasks") == one(
            "SELECT count(*) FROM tasks WHERE epoch = ?")
        assert value(final, "training_tasks") == one("SELECT count(*) FROM training_tasks WHERE epoch = ?") > 0
        assert value(final, "signed_weight") == sum(s["weight"] for s in block["signatures"])


def test_every_asset_check_ran_and_passed(demo_epoch):
    layout, _, _, _, checks = demo_epoch
    assert set(checks) == ALL_CHECKS
    for key, evaluation in checks.items():
        assert evaluation.passed, (key, evaluation.metadata)
    with opened(layout, read_only=True) as store:
        assert value(checks[("rewards", "supply_conserved")].metadata, "supply") == check_epoch_supply(store, 1)
    assert value(checks[("block_proposal", "block_rederives")].metadata, "problem") == "none"
    assert value(checks[("rewards", "payouts_have_lineage")].metadata, "problems") == []


def test_blocking_flags_of_the_checks():
    from gonka_pipelines.definitions import defs

    specs = {(spec.asset_key.to_user_string(), spec.name): spec.blocking
             for checks in defs.resolve_asset_graph().asset_check_keys for spec in [defs.resolve_asset_graph().get_check_spec(checks)]}
    assert {key for key, blocking in specs.items() if blocking} == BLOCKING_CHECKS
    assert set(specs) == ALL_CHECKS


# -- the supply check blocks ----------------------------------------------------------------------------------------


def test_supply_check_names_both_sides_of_a_bogus_transfer(tmp_path_factory, tmp_path):
    """Stages up to rewards, then a transfer that creates 7 units from nothing: check_epoch_supply names both sides."""
    template, network = small_template(tmp_path_factory)
    layout = copy_chain(template.root, tmp_path / "chain")
    with opened(layout) as store:
        epoch = store.head().height + 1
        submit_tasks(store, layout, network, 3)
        run_stages(store, layout, epoch, through="rewards")
        supply = check_epoch_supply(store, epoch)
        developer = store._query("SELECT address FROM accounts WHERE kind = 'developer' ORDER BY address")[0][0]
        store._insert("transfers", [{"transfer_id": "bogus", "epoch": epoch, "stage": "rewards", "account": developer,
                                    "balance_delta": 7, "escrow_delta": 0, "kind": "bogus", "ref": "test"}])
        with pytest.raises(SupplyInvariantError) as caught:
            check_epoch_supply(store, epoch)
        error = caught.value
        assert (error.holdings, error.issued, error.difference) == (supply + 7, supply, 7)
        assert f"= {supply + 7}" in str(error) and f"= {supply}" in str(error) and "(difference +7)" in str(error)
        assert "balances + escrow + locked vesting + collateral" in str(error) and "genesis supply + minted - burned" in str(error)
        # escrow that vanishes is caught the same way, with the opposite sign
        store._execute("UPDATE transfers SET balance_delta = 0, escrow_delta = -3 WHERE transfer_id = 'bogus'")
        with pytest.raises(SupplyInvariantError, match=r"difference -3"):
            check_epoch_supply(store, epoch)


def test_a_failed_supply_check_blocks_the_block(tmp_path, instance):
    """A chain whose block 1 post-state holds 1 unit more than genesis supply + minted - burned: epoch 2 stops at the
    check, is never proposed or finalized, and the check's metadata says by how much."""
    genesis_dir = tmp_path / "config"
    network = demo_network()
    layout = create_chain(tmp_path / "chain", fast_genesis(genesis_dir), network)
    with opened(layout) as store:
        submit_tasks(store, layout, network, 3)
    assert run_next_epoch(layout, instance).success
    with opened(layout) as store:
        store._execute(
            "UPDATE account_states SET balance = balance + 1 WHERE epoch = 1 AND address = "
            "(SELECT min(address) FROM accounts WHERE kind = 'developer')")
        submit_tasks(store, layout, network, 3)
    run = run_next_epoch(layout, instance)
    assert run.success is False
    materializations, checks = run_events(instance, run.run_id)
    supply = checks[("rewards", "supply_conserved")]
    assert supply.passed is False
    assert value(supply.metadata, "difference") == 1
    assert "supply invariant broken" in value(supply.metadata, "problem")
    assert "rewards" in materializations
    assert "block_proposal" not in materializations and "block" not in materializations
    with opened(layout, read_only=True) as store:
        assert store.head().height == 1
        assert store.epoch_status(2) == "open"
        assert store.block(2) is None


def test_store_insert_right_after_scalar(tmp_path_factory, tmp_path):
    template, _ = small_template(tmp_path_factory)
    layout = copy_chain(template.root, tmp_path / "chain")
    with opened(layout) as store:
        assert store._scalar("SELECT count(*) FROM hosts") == 5
        store._insert("chain_meta", [{"key": "test-key", "value": "v"}])
        assert store.meta("test-key") == "v"
