"""Replayability: the same genesis, network and submissions give the same blocks, wherever and whenever they run."""

from __future__ import annotations

import json

import pytest

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.demo import submit_demo_workload
from gonka_pipelines.paths import DataLayout
from gonka_pipelines.protocol.params import NetworkConfig
from gonka_pipelines.stages.block import finalize_block, propose_block
from gonka_pipelines.stages.collect import run_collect
from gonka_pipelines.stages.genesis import init_chain

EPOCHS = 2
COMMITTED = ("tasks", "rejected_tasks", "transfers", "account_states", "host_states", "block_signatures")


def build_chain(root, genesis, network: NetworkConfig) -> tuple[list[str], dict[str, list[tuple]]]:
    """A fresh chain from genesis through EPOCHS demo epochs, run stage by stage (no Dagster)."""
    layout = DataLayout(root)
    with ChainStore.open(layout.database) as store:
        hashes = [init_chain(store, layout, genesis, network).hash]
        for epoch in range(1, EPOCHS + 1):
            submit_demo_workload(store, layout, network, epoch)
            run_collect(store, layout, epoch)
            propose_block(store, layout, epoch)
            hashes.append(finalize_block(store, layout, epoch))
        assert verify_chain(store).first_problem is None
        rows = {table: store.query(f"SELECT * FROM {table} ORDER BY ALL") for table in COMMITTED}
        rows["headers"] = store.query("SELECT height, hash, header_json FROM blocks ORDER BY height")
    return hashes, rows


def test_two_fresh_chains_give_identical_blocks(tmp_path, genesis, network):
    hashes_a, rows_a = build_chain(tmp_path / "a", genesis, network)
    hashes_b, rows_b = build_chain(tmp_path / "b", genesis, network)
    assert len(hashes_a) == EPOCHS + 1 and len(set(hashes_a)) == EPOCHS + 1
    assert hashes_a == hashes_b
    assert rows_a == rows_b
    assert rows_a["tasks"], "the workload must produce accepted tasks, or the comparison proves little"


def test_block_times_come_from_genesis_not_the_clock(tmp_path, genesis, network):
    _, rows = build_chain(tmp_path / "c", genesis, network)
    assert [json.loads(header)["timestamp"] for _, _, header in rows["headers"]] == [
        genesis.block_timestamp(h) for h in range(EPOCHS + 1)]


@pytest.mark.parametrize("change", ["key_seed", "balance"])
def test_a_different_network_gives_different_blocks(tmp_path, genesis, network, change):
    """The comparison above is not vacuous: change one input and every block hash changes."""
    hashes, _ = build_chain(tmp_path / "base", genesis, network)
    if change == "key_seed":
        other = network.model_copy(update={"key_seed": "another-seed"})
    else:
        developers = (network.developers[0].model_copy(update={"balance": network.developers[0].balance + 1}),
                      *network.developers[1:])
        other = network.model_copy(update={"developers": developers})
    other_hashes, _ = build_chain(tmp_path / "other", genesis, other)
    assert all(a != b for a, b in zip(hashes, other_hashes))
