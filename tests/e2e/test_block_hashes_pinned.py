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
    "a10093130e34a7c6b8928c578c65098e7b5f490b1435793306b8cf709ba75473",
    "71927616d319ca0fff9fa463f82db6ab0b69c4bbcd38130ba7acbd1271a704fe",
    "8d485160145bdb3b918b99b1397f2387899a859f6612ec8bf386016dcb090151",
    "999573f2ab2980be9761a8bc9fc71ded721c7231ad6ef073f4e5ddfd65b80f73",
]
SMALL_HASHES = [
    "c5f9631ccb7c2e8fc08be97c9c6bcd1e83d0398f28eea1b092bb2da1375fb20b",
    "b1e304d68c51a0948cfa06c73f39d2e44ec121e43276ce2b6dad6a311e212d06",
    "4b5c236b9cb159ff403acbe93a181b90c12d466f149a1311ce822d600489388b",
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
