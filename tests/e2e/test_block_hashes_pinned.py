"""The demo chain's block hashes, pinned byte for byte: a refactor that changes what a block commits to fails here.

DEMO_HASHES are the blocks `make demo` builds (shipped genesis and network, three epochs of the demo workload);
SMALL_HASHES the small adversarial chain run stage by stage. They must not move unless the protocol itself changes
(then say so in the commit that re-pins them). They last moved in issue 9: the demo workload orders two training
tasks per epoch (blocks 1-3), after genesis began to register the training corpus's shards and each served model's
genesis version (block 0's roots) and the parameters gained the `training` section. Before that, in issue 8, headers
began to commit to lineage, submissions and the previous block's signer set (alone, stripping those fields gave the
issue-7 hashes byte for byte), eleven rules were brought in line with PROTOCOL.md and Gonka's code, and the
parameters gained the inbox limits.
"""

from __future__ import annotations

import dagster as dg
import pytest

from gonka_pipelines.defs.launch import run_next_epoch
from gonka_pipelines.local.config import load_genesis, load_network
from gonka_pipelines.simulation.workload import submit_demo_workload

from support.chains import create_chain, opened, small_template

DEMO_HASHES = [
    "db88a93bfdab590965dcfcaa5dce8b42da1711530d381f65daec10bfc246c5cf",
    "c9401f9f76781da1a1addfdbefe15d93f321fcc8398c5bc2fcbfff88c2ed0173",
    "8d9487b9dac58f2f00f2b2099986b7198cb3d0f5e9aaa67464f994cb5de67cca",
    "d229bde940e678ca9e3077546cdc3b9d56e8e34274f71a5ab714705dd53d7458",
]
SMALL_HASHES = [
    "8f7532f8a55f3a57abe3d0965261253ed3b875a6e95f15dff923df98882f1715",
    "8b7466eca0c26bca5188c4ec3d90443437e56b9eb2f2467a5c6f7064aa9c49bc",
    "d5ae028d43d90877c028411bb5ec7ed939b272316dca8ddd1f6bd1fb603e9cbf",
]


def block_hashes(layout) -> list[str]:
    with opened(layout, read_only=True) as store:
        return [store.block(height)["hash"] for height in store.finalized_heights()]


def test_the_demo_chain_has_the_pinned_block_hashes(demo_template):
    assert block_hashes(demo_template) == DEMO_HASHES


def test_the_small_adversarial_chain_has_the_pinned_block_hashes(tmp_path_factory):
    assert block_hashes(small_template(tmp_path_factory)[0]) == SMALL_HASHES


@pytest.mark.slow
def test_an_epoch_run_through_dagster_gives_the_pinned_block(tmp_path):
    network = load_network()
    layout = create_chain(tmp_path / "chain", load_genesis(), network)
    with opened(layout) as store:
        submit_demo_workload(store, layout, network, 1)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_next_epoch(layout, instance).success
    assert block_hashes(layout) == DEMO_HASHES[:2]
