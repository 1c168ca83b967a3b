"""The Dagster code location: loadable, the chain-core assets, checks and job present, writers serialized."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from gonka_pipelines.definitions import defs
from gonka_pipelines.defs.launch import DAGSTER_YAML
from gonka_pipelines.defs.partitions import epoch_of, epochs
from gonka_pipelines.defs.resources import ChainResource

CORE_ASSETS = {"epoch_tasks", "block_proposal", "block"}


def asset_defs() -> dict[str, dg.AssetsDefinition]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.assets_def_for_key(key) for key in graph.get_all_asset_keys()}


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)


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
    assert ancestors == set(graph.get_all_asset_keys()) - {block_key}  # every stage feeds the block
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
    assert set(asset_defs()) <= {key.to_user_string() for key in job.asset_layer.executable_asset_keys}


def test_every_asset_that_writes_the_chain_is_in_the_chain_pool():
    writers = {name: a for name, a in asset_defs().items() if "chain" in a.required_resource_keys}
    assert CORE_ASSETS <= set(writers)
    assert {name: a.op.pool for name, a in writers.items()} == dict.fromkeys(writers, "chain")


def test_every_asset_is_partitioned_by_the_dynamic_epochs():
    assert isinstance(epochs, dg.DynamicPartitionsDefinition) and epochs.name == "epochs"
    for name, a in asset_defs().items():
        assert a.partitions_def == epochs, name


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
