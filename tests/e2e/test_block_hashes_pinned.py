"""The demo chain's block hashes, pinned byte for byte: a refactor that changes what a block commits to fails here.

DEMO_HASHES are the blocks `make demo` builds (shipped genesis and network, three epochs of the demo workload);
SMALL_HASHES the small adversarial chain run stage by stage. Both were recorded before the structure change of
issue 7 and must not move unless the protocol itself changes (then say so in the commit that re-pins them).
"""

from __future__ import annotations

import dagster as dg
import pytest

from gonka_pipelines.defs.launch import run_next_epoch
from gonka_pipelines.local.config import load_genesis, load_network
from gonka_pipelines.simulation.workload import submit_demo_workload

from support.chains import create_chain, opened, small_template

DEMO_HASHES = [
    "1fe40e882bac76d4bd5bf41a3f54f97d4fedb5f3cb37a395975a99663c998683",
    "6a365fc8534744ed51f85780e328b7a82c62a37621bb18ee791db14fc947380c",
    "d46008ea75d2cb133b36edba6bc2d00391df7dd0e1cd6e6221685acb809aa3fe",
    "4ce97b9cf4900cdf3608f31eac0051ea97a50cc85f8ff6533563413c95ccebf1",
]
SMALL_HASHES = [
    "ca88e3d8612fcf11688fca5a85515819d34d705bc6ce0a773182c3ac53e5aaf8",
    "1f47d216ed773d09435a8d419bc282a89403cd49752455fac077ee340d1211bc",
    "5fab6b8127daa8da7016e2bf46a8165c9450c616d14806a5197c1bcf491a96e8",
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
