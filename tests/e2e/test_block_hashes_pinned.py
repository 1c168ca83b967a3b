"""The demo chain's block hashes, pinned byte for byte: a refactor that changes what a block commits to fails here.

DEMO_HASHES are the blocks `make demo` builds (shipped genesis and network, three epochs of the demo workload);
SMALL_HASHES the small adversarial chain run stage by stage. They must not move unless the protocol itself changes
(then say so in the commit that re-pins them), or the numerics torch runs under. They last moved in issue 11, when an
executor began to sign one Merkle root over its epoch's results and a validator one over its verdicts, per kind
(`record_roots`, a new header root, in block 0 too), and results and verdicts (inference and training) lost their own
signature column;
nothing else changed (the leaf encoding included). Before that, when the package
began to hold MKL, oneDNN and ATen to one kernel choice on every x86 machine (gonka_pipelines/__init__.py): blocks
1-3 had been sealed on a machine whose kernels rounded differently from an AMD EPYC's (with MKL's reproducible mode
block 0 and the served losses came out the same, blocks 1-3 did not), and the block hashes moved with them; the
protocol did not change. Before that, in issue 11: a validator's PoC verdicts became one
signed record of vectors (the poc_verdicts root has one leaf per validator, the signatures root is gone), epoch_weights
records the weight asked to vote (vote_weight), the parameters gained sprint.validation and sprint.committee_size, and
the validation draw became seeded skip-sampling (same distribution, other pairs), and the demo workload orders ten
training tasks per epoch instead of six (blocks 1-3). Before that, in issue 9: the demo workload orders two training
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
    "cd829b0d7107b0d8201d3ee444dc9918ce0c8e18ecb793a8b0eea9b1e1c3c69a",
    "58e416fb816b45036bf48316fec782380f84a3bcbd92d83e18cc6ec12d324926",
    "8eaa74685cf285d1eae7e99ca4ae20241bc6a64ce6b6c629bdc72cc4cb01644b",
    "669cc197f2b6bb5fe7f8f5569c8a019b9ce1229e1199e3dc6da97fcb4e254230",
]
SMALL_HASHES = [
    "668fbbf16f32736b6c31ad8ba2030b3b50972bee5b71997d866d0ec4108f834a",
    "9766ab29342d8412bbe1bebab0322fb7be05b5e8f4b62cc5e1d85244d57883a5",
    "4e8b3a96d53ac4d65cc1921df3c111dac2db98dcdc40bac2819c5f57c55f36cf",
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
