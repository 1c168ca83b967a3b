"""Replayability: the same genesis, network and submissions give the same blocks, wherever and whenever they run."""

from __future__ import annotations

import json

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.simulation.workload import submit_demo_workload
from gonka_pipelines.stages.genesis import init_chain
from gonka_pipelines.stages.pipeline import run_epoch

from support.chains import DEMO_EPOCHS, opened

COMMITTED = ("tasks", "rejected_tasks", "transfers", "account_states", "host_states", "block_signatures", "submissions")


def chain_contents(store: ChainStore) -> tuple[list[str], dict[str, list[tuple]]]:
    hashes = [h for (h,) in store._query("SELECT hash FROM blocks WHERE status = 'finalized' ORDER BY height")]
    rows = {table: store._query(f"SELECT * FROM {table} ORDER BY ALL") for table in COMMITTED}
    rows["headers"] = store._query("SELECT height, hash, header_json FROM blocks ORDER BY height")
    return hashes, rows


def test_two_fresh_chains_give_identical_blocks(tmp_path, genesis, network, demo_template):
    """A chain built here from scratch (stages directly, no Dagster) equals the session's demo chain, block for block."""
    with opened(demo_template, read_only=True) as demo:
        epochs = demo.head().height
        other_hashes, other_rows = chain_contents(demo)
    assert epochs == DEMO_EPOCHS == 3
    layout = DataLayout(tmp_path / "fresh")
    with ChainStore.open(layout.database) as store:
        init_chain(store, layout, genesis, network)
        for epoch in range(1, epochs + 1):
            submit_demo_workload(store, layout, network, epoch)
            run_epoch(store, layout, epoch)  # stages.pipeline, no Dagster
        assert verify_chain(store).first_problem is None
        hashes, rows = chain_contents(store)
    assert len(hashes) == epochs + 1 == len(set(hashes))
    assert hashes == other_hashes
    assert rows == other_rows
    assert rows["tasks"], "the workload must produce accepted tasks, or the comparison proves little"


def test_block_times_come_from_genesis_not_the_clock(demo_template, genesis):
    with opened(demo_template, read_only=True) as demo:
        headers = [json.loads(header) for (header,) in demo._query("SELECT header_json FROM blocks ORDER BY height")]
    assert len(headers) == DEMO_EPOCHS + 1
    assert [h["timestamp"] for h in headers] == [genesis.block_timestamp(height) for height in range(len(headers))]
    assert headers[1]["timestamp"] == "2026-01-01T00:10:00+00:00"


def test_a_different_network_gives_a_different_chain(tmp_path, genesis, network):
    """The comparison above is not vacuous: a different key seed or balance changes the genesis block, hence every
    block after it (each links to its predecessor's hash)."""
    developers = (network.developers[0].model_copy(update={"balance": network.developers[0].balance + 1}),
                  *network.developers[1:])
    variants = {"same": network, "key_seed": network.model_copy(update={"key_seed": "another-seed"}),
                "balance": network.model_copy(update={"developers": developers})}
    hashes = {}
    for name, config in variants.items():
        layout = DataLayout(tmp_path / name)
        with ChainStore.open(layout.database) as store:
            hashes[name] = init_chain(store, layout, genesis, config).hash
    layout = DataLayout(tmp_path / "same-again")
    with ChainStore.open(layout.database) as store:
        assert init_chain(store, layout, genesis, network).hash == hashes["same"]
    assert len(set(hashes.values())) == 3
