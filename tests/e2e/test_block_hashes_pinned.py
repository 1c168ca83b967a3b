"""The demo chain's block hashes, pinned byte for byte: a refactor that changes what a block commits to fails here.

DEMO_HASHES are the blocks `make demo` builds (shipped genesis and network, three epochs of the demo workload);
SMALL_HASHES the small adversarial chain run stage by stage. They must not move unless the protocol itself changes
(then say so in the commit that re-pins them). They last moved in issue 8, for two reasons: block headers began to
commit to lineage, submissions and the previous block's signer set (hashed without those fields, the chain was the
issue-7 one byte for byte), and eleven rules were brought in line with PROTOCOL.md and
Gonka's code (own sprint votes, both slashes, refusals burned an epoch later, vested work coins, INVALID costing the
current epoch's weight, one traffic measure, RAMPING on executed tasks, the split's remainder, the price's first epoch,
`>` for mismatches and a cap of 0, one nonce stream per ML node), which change the rows of every later block; and the
parameters gained the inbox limits (`tasks.max_submission_bytes`, `tasks.max_submissions_per_epoch`).
"""

from __future__ import annotations

import dagster as dg
import pytest

from gonka_pipelines.defs.launch import run_next_epoch
from gonka_pipelines.local.config import load_genesis, load_network
from gonka_pipelines.simulation.workload import submit_demo_workload

from support.chains import create_chain, opened, small_template

DEMO_HASHES = [
    "838a20ff03c64926e6484aaf3cc0e354ed5690f8d19fcd69de69c9da55be9593",
    "1d0d71df5cee5e45df56e64e7404b93777b85fcae74c5d5949cfc4537061074a",
    "a1431c3f51f83162de1226936006569eee1038c22d57130b394b6c1d3b7c871b",
    "d11c688ab9ccd6965928c21fcc99a9a55aeec5be1b9f658ed074776c6a85c3ec",
]
SMALL_HASHES = [
    "974f06d6d57364516b13cff8135743fabd3bab02ba857df96faddb658a8b397b",
    "28c21381ebe6bcf25b5a6c439cc6a0abe9abaa314d18bc4fe11fba8f6220204c",
    "7ab090c58d40bedfacedbff3bd3449b17028a63c583a30aeff779c488614e251",
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
