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
    "87155d22dac5438e7367f2dd78125ecada7ab5091e4d3546cec4314f7ee617a0",
    "8d53320f9ae6be2b9eb306da1ab40dcc4811f99e3a2cdc299e2c880349f35c6a",
    "d6b3b5ecd684485d646ad98eb73a05da7447d882a73010b0afaeab6d22a9b8ff",
    "dcd5a3da226d5287f465ae03c5332570b6a33a523638cebd72bbabd7bfef6553",
]
SMALL_HASHES = [
    "821136383e2809cbd60a0e73104659d926d12e450343cef28d26a60f118c8ee6",
    "2a6afe8c8acb4929dad0eb419ea9f7e02797add056f439aaa90078896be74494",
    "af6d1733f678b7de09f229dcb9ff051edd3e828c6118676ecdd98071ec0741ac",
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
