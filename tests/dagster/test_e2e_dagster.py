"""End to end through Dagster: two epochs materialized into a DuckDB chain in tmp_path; a re-run of a finalized
epoch refused without touching the chain; a proposal that fails a blocking check never becomes a block."""

from __future__ import annotations

import dataclasses
import shutil

import dagster as dg
import pytest

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.definitions import defs
from gonka_pipelines.defs.launch import run_next_epoch
from gonka_pipelines.defs.partitions import epochs
from gonka_pipelines.defs.resources import REFUSED_TAG, ChainResource
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.simulation.workload import submit_demo_workload
from gonka_pipelines.stages import registry
from gonka_pipelines.stages.block import propose_block
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain

pytestmark = pytest.mark.slow

BLOCK_CHECKS = ("block_links_to_head", "block_rederives", "signed_messages_verify", "block_signatures_verify")

TABLES = ("epochs", "submissions", "tasks", "rejected_tasks", "transfers", "account_states", "host_states", "blocks",
          "block_signatures", "lineage")


def error_text(event: dg.DagsterEvent) -> str:
    """Every message in a step failure's error chain (the Dagster failure, its cause and context)."""
    texts, pending = [], [event.step_failure_data.error]
    while pending:
        error = pending.pop()
        if error is not None:
            texts.append(error.message)
            pending += [error.cause, error.context]
    return "\n".join(texts)


def snapshot(store: ChainStore) -> dict[str, list[tuple]]:
    return {table: store._query(f"SELECT * FROM {table} ORDER BY ALL") for table in TABLES}


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture(scope="module")
def two_epochs_through_dagster(tmp_path_factory, genesis_template, network, instance):
    layout = DataLayout(tmp_path_factory.mktemp("e2e") / "chain")
    shutil.copytree(genesis_template, layout.root)
    runs, submitted = [], []
    for _ in range(2):
        with ChainStore.open(layout.database) as store:
            kinds = submit_demo_workload(store, layout, network, store.head().height + 1)
        submitted.append(sum(kinds.values()))
        runs.append(run_next_epoch(layout, instance))
    return layout, runs, submitted


def test_two_epochs_run_and_verify(two_epochs_through_dagster):
    layout, runs, submitted = two_epochs_through_dagster
    assert [(run.epoch, run.success) for run in runs] == [(1, True), (2, True)]
    with ChainStore.open(layout.database, read_only=True) as store:
        assert store.head().height == 2
        report = verify_chain(store)
        assert (report.blocks_verified, report.first_problem) == (3, None)
        for epoch, count in zip((1, 2), submitted):
            taken = store._scalar("SELECT count(*) FROM submissions WHERE epoch = ?", [epoch])
            assert taken == count
            assert store._scalar("SELECT count(*) FROM tasks WHERE epoch = ?", [epoch]) > 0
            assert store.epoch_status(epoch) == "finalized"
    assert not list(layout.inbox.glob("*.json"))


def test_materializations_are_recorded_for_both_partitions(two_epochs_through_dagster, instance):
    layout, runs, _ = two_epochs_through_dagster
    for name in ("epoch_tasks", "block_proposal", "block"):
        assert instance.get_materialized_partitions(dg.AssetKey(name)) >= {"1", "2"}, name
    assert {run.run_id for run in runs} <= {r.run_id for r in instance.get_runs()}
    for run in runs:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_run_by_id(run.run_id).tags["dagster/partition"] == str(run.epoch)
    # the finalized block asset added the next epoch's partition
    assert set(instance.get_dynamic_partitions(epochs.name)) >= {"1", "2", "3"}
    # metadata of the block materializations names the blocks
    with ChainStore.open(layout.database, read_only=True) as store:
        for epoch in (1, 2):
            event = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("block"), asset_partitions=[str(epoch)]), limit=1).records[0]
            metadata = event.asset_materialization.metadata
            assert metadata["block_hash"].value == store.block(epoch)["hash"]
    for name in BLOCK_CHECKS:
        check = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(dg.AssetKey("block_proposal"), name))
        assert check is not None and check.event.asset_check_evaluation.passed, name


def test_a_run_for_a_finalized_epoch_is_refused_without_a_failed_step_and_changes_nothing(two_epochs_through_dagster, instance):
    """A wrong pick in the partition list: the first step refuses (run tagged with what to launch instead), every later
    step is skipped, no step fails and nothing is materialized, so no asset or check turns red."""
    layout, _, _ = two_epochs_through_dagster
    with ChainStore.open(layout.database, read_only=True) as store:
        before = snapshot(store)
    materialized_before = instance.fetch_materializations(dg.AssetKey("block"), limit=10).records
    result = defs.resolve_job_def("epoch").execute_in_process(
        instance=instance, partition_key="1", resources={"chain": ChainResource(data_dir=str(layout.root))},
        raise_on_error=False,
    )
    assert result.success
    steps = {event.step_key: event.event_type_value for event in result.all_events
             if event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED")}
    assert steps.pop("epoch_tasks") == "STEP_SUCCESS"
    assert steps and set(steps.values()) == {"STEP_SKIPPED"}
    assert "block" in steps and "block_proposal_block_rederives" in steps
    assert not [event for event in result.all_events if event.event_type_value == "ASSET_MATERIALIZATION"]
    refused = instance.get_run_by_id(result.run_id).tags[REFUSED_TAG]
    assert "epoch 1 is finalized" in refused and "Launch the next epoch instead: partition 3" in refused
    assert instance.fetch_materializations(dg.AssetKey("block"), limit=10).records == materialized_before
    with ChainStore.open(layout.database, read_only=True) as store:
        assert snapshot(store) == before
        assert verify_chain(store).first_problem is None


def test_a_proposal_that_fails_the_blocking_check_never_becomes_a_block(genesis_layout, submit, instance, monkeypatch):
    """The real proposal, then a task row rewritten after signing: block_rederives fails, so `block` never runs.

    The assets look their stage up in the registry when they run, so the test swaps the registry's block_proposal
    stage (no asset module attribute is patched)."""
    stage = registry.BY_NAME["block_proposal"]

    def corrupting_run(env: EpochEnvironment, open_chain: OpenChain, log: Log):
        header = propose_block(env, open_chain, log)
        with open_chain() as store:
            store._execute("UPDATE tasks SET prompt = 'rewritten after signing' WHERE task_id = "
                           "(SELECT min(task_id) FROM tasks WHERE epoch = ?)", [env.epoch])
        return header

    submit(3)
    with monkeypatch.context() as patch:
        patch.setitem(registry.BY_NAME, "block_proposal", dataclasses.replace(stage, run=corrupting_run))
        run = run_next_epoch(genesis_layout, instance)
    assert registry.BY_NAME["block_proposal"] is stage
    assert (run.epoch, run.success) == (1, False)
    with ChainStore.open(genesis_layout.database, read_only=True) as store:
        assert store.head().height == 0 and store.epoch_status(1) == "proposed"
        assert store._scalar("SELECT count(*) FROM tasks WHERE epoch = 1 AND prompt = 'rewritten after signing'") == 1
    assert list(genesis_layout.inbox.glob("*.json")), "submissions of an unfinalized epoch stay in the inbox"
    evaluation = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey("block_proposal"), "block_rederives")).event.asset_check_evaluation
    assert not evaluation.passed and "tasks root" in evaluation.metadata["problem"].value
    materialized = {record.dagster_event.event_specific_data.materialization.asset_key.to_user_string()
                    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)}
    assert "block_proposal" in materialized and "block" not in materialized
