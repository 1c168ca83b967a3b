"""The Dagster code location (gonka_pipelines.definitions, dg's layout): loadable without deprecation warnings, one
asset per registry stage in the registry's order, checks and job present, writers serialized."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from gonka_pipelines.definitions import defs
from gonka_pipelines.defs.assets import EPOCH_ASSETS
from gonka_pipelines.defs.launch import DAGSTER_YAML
from gonka_pipelines.defs.metadata import RENDER
from gonka_pipelines.defs.partitions import epoch_of, epochs
from gonka_pipelines.defs.resources import ChainResource
from gonka_pipelines.stages.registry import STAGE_NAMES, STAGES

REPO_ROOT = Path(__file__).resolve().parents[2]

CORE_ASSETS = {"epoch_tasks", "block_proposal", "block"}
TRAINING_ASSETS = ("corpus_shards", "model_versions")
LAB_ASSETS = ("what_if_fork", "sweep_results")
OPERATIONS_ASSETS = ("next_epoch_request",)
"""Not epochs' data: the three-click launch's request (unpartitioned, in its own job, outside the epoch job)."""


def asset_defs() -> dict[str, dg.AssetsDefinition]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.assets_def_for_key(key) for key in graph.get_all_asset_keys()}


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)


# The warnings that loading the code location raises, recorded in a fresh interpreter (a module imported once per
# process warns once, so this process, which imported it above, cannot see them): category (with its bases), message.
_LOAD_AND_RECORD_WARNINGS = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from gonka_pipelines.definitions import defs
    defs.resolve_asset_graph()
    defs.resolve_job_def("epoch")
print(json.dumps([{"categories": [c.__name__ for c in w.category.__mro__], "message": f"{w.category.__name__}: {w.message} "
                   f"({w.filename}:{w.lineno})"} for w in caught]))
"""


def test_loading_the_code_location_raises_no_deprecation_or_supersession_warning():
    result = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", _LOAD_AND_RECORD_WARNINGS], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    caught = json.loads(result.stdout.strip().splitlines()[-1])
    offending = [w["message"] for w in caught
                 if {"DeprecationWarning", "PendingDeprecationWarning", "SupersessionWarning"} & set(w["categories"])]
    assert offending == []
    assert "DeprecationWarning" not in result.stderr and "SupersessionWarning" not in result.stderr, result.stderr[-4000:]


def test_the_assets_are_exactly_the_registry_stages_in_order():
    """One asset per stage of stages.registry.STAGES, named after it, each after the stage before it."""
    assert [a.key.to_user_string() for a in EPOCH_ASSETS] == list(STAGE_NAMES) == [
        "epoch_tasks", "sprint_batches", "sprint_verdicts", "epoch_weights", "task_results", "task_verdicts", "rewards",
        "block_proposal", "block"]
    assert sorted(asset_defs()) == sorted([*STAGE_NAMES, *TRAINING_ASSETS, *LAB_ASSETS, *OPERATIONS_ASSETS])  # nothing else
    graph = defs.resolve_asset_graph()
    assert [key.to_user_string() for key in graph.toposorted_asset_keys if key.to_user_string() in STAGE_NAMES] == list(STAGE_NAMES)
    for previous, stage in zip((None, *STAGES), STAGES):
        node = graph.get(dg.AssetKey(stage.name))
        assert node.parent_keys == ({dg.AssetKey(previous.name)} if previous else set()), stage.name
        spec = node.assets_def.specs_by_key[dg.AssetKey(stage.name)]
        assert [dep.asset_key for dep in spec.deps] == ([dg.AssetKey(previous.name)] if previous else []), stage.name
        assert (spec.group_name, spec.description) == (stage.group, stage.description), stage.name
        assert ("pytorch" in spec.kinds) == stage.computes, stage.name


def test_model_versions_follow_validation_and_the_corpus():
    """The training assets: the corpus is an external asset (registered at genesis, never materialized by a run), and
    model_versions reads what task_verdicts wrote, so the lineage graph runs corpus → model versions ← the epoch."""
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("model_versions"))
    assert node.parent_keys == {dg.AssetKey("task_verdicts"), dg.AssetKey("corpus_shards")}
    assert node.partitions_def == epochs and node.group_name == "training"
    corpus = graph.get(dg.AssetKey("corpus_shards"))
    assert not corpus.is_materializable and corpus.group_name == "training"
    shards = corpus.metadata["shards"].records
    assert [r.data["role"] for r in shards].count("eval") == 1 and len(shards) >= 7
    job_assets = {key.to_user_string() for key in defs.resolve_job_def("epoch").asset_layer.asset_graph.executable_asset_keys}
    assert job_assets == {*STAGE_NAMES, "model_versions"}, "one launch materializes the epoch and its model versions"


def test_every_stage_has_its_metadata_renderer():
    assert list(RENDER) == list(STAGE_NAMES)
    assert all(callable(render) for render in RENDER.values())


def test_chain_core_assets_are_present():
    assert CORE_ASSETS <= set(asset_defs())


def test_the_block_comes_after_everything_else():
    graph = defs.resolve_asset_graph()
    block_key = dg.AssetKey("block")
    ancestors, frontier = set(), {block_key}
    while frontier:
        frontier = {p for key in frontier for p in graph.get(key).parent_keys} - ancestors
        ancestors |= frontier
    assert dg.AssetKey("block_proposal") in graph.get(block_key).parent_keys
    assert ancestors == {dg.AssetKey(name) for name in STAGE_NAMES} - {block_key}  # every stage feeds the block
    assert graph.get(dg.AssetKey("epoch_tasks")).parent_keys == set()  # collect comes first


BLOCK_CHECKS = {"block_links_to_head", "block_rederives", "signed_messages_verify", "block_signatures_verify"}
"""Together these re-run verify_block on the proposal: links, content (hash, params, roots, post-state), signed rows,
block signatures."""


def test_blocking_checks_guard_the_proposal():
    specs = {spec.name: spec for check in defs.asset_checks for spec in check.check_specs}
    assert BLOCK_CHECKS <= set(specs)
    for name in BLOCK_CHECKS:
        assert specs[name].asset_key == dg.AssetKey("block_proposal") and specs[name].blocking, name
    assert {key.name for key in defs.resolve_asset_graph().asset_check_keys} == set(specs)


def test_the_epoch_job_covers_every_asset_on_the_epochs_partitions():
    job = defs.resolve_job_def("epoch")
    assert job.name == "epoch"
    assert job.partitions_def == epochs
    executable = {name for name, a in asset_defs().items() if a.is_executable and name not in (*LAB_ASSETS, *OPERATIONS_ASSETS)}
    assert executable == set(asset_defs()) - {"corpus_shards", *LAB_ASSETS, *OPERATIONS_ASSETS}
    assert executable == {key.to_user_string() for key in job.asset_layer.executable_asset_keys}


def test_every_asset_that_writes_the_chain_is_in_the_chain_pool():
    writers = {name: a for name, a in asset_defs().items() if "chain" in a.required_resource_keys}
    assert CORE_ASSETS <= set(writers)
    assert {name: a.op.pool for name, a in writers.items()} == dict.fromkeys(writers, "chain")


def test_every_asset_is_partitioned_by_the_dynamic_epochs():
    assert isinstance(epochs, dg.DynamicPartitionsDefinition) and epochs.name == "epochs"
    for name, a in asset_defs().items():
        assert a.partitions_def == (epochs if a.is_executable and name not in (*LAB_ASSETS, *OPERATIONS_ASSETS) else None), name


def test_the_chain_resource_is_bound():
    assert isinstance(defs.resources["chain"], ChainResource)


def test_the_shipped_instance_config_limits_the_chain_pool_to_one():
    config = yaml.safe_load(DAGSTER_YAML.read_text())
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 1


def test_the_shipped_instance_config_loads(tmp_path):
    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML.read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


@pytest.mark.parametrize("key, epoch", [("0", 0), ("7", 7), ("123", 123)])
def test_epoch_of_reads_the_partition_key(key, epoch):
    context = dg.build_asset_context(partition_key=key)
    assert epoch_of(context) == epoch


@pytest.mark.parametrize("key", ["-1", "one", "1.5", " 2"])
def test_epoch_of_refuses_keys_that_are_not_heights(key):
    context = dg.build_asset_context(partition_key=key)
    with pytest.raises(dg.Failure, match="must be a block height"):
        epoch_of(context)


def test_the_lab_has_its_own_job_and_stays_out_of_the_epoch():
    """what_if_fork and sweep_results run with run config in their own jobs; launching an epoch never forks or sweeps."""
    for job, asset in (("what_if", "what_if_fork"), ("sweep", "sweep_results")):
        lab = defs.resolve_job_def(job)
        assert {k.to_user_string() for k in lab.asset_layer.asset_graph.executable_asset_keys} == {asset}
    epoch = defs.resolve_job_def("epoch")
    assert not set(LAB_ASSETS) & {k.to_user_string() for k in epoch.asset_layer.asset_graph.executable_asset_keys}
    assert asset_defs()["what_if_fork"].op.pool == "chain", "it copies the chain: never beside a writer"
