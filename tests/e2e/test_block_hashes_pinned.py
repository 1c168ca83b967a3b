"""The demo chain's block hashes, pinned byte for byte: a refactor that changes what a block commits to fails here.

DEMO_HASHES are the blocks `make demo` builds (shipped genesis and network, three epochs of the demo workload);
SMALL_HASHES the small adversarial chain run stage by stage. They must not move unless the protocol itself changes
(then say so in the commit that re-pins them). They last moved when every consensus number and the rule set's name
entered the parameters (issue 7); LEGACY_DEMO_HASHES and the last test show that nothing else changed then.
"""

from __future__ import annotations

import dagster as dg
import pytest

from gonka_pipelines.defs.launch import run_next_epoch
from gonka_pipelines.local.config import load_genesis, load_network
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.simulation.workload import submit_demo_workload

from support.chains import DEMO_EPOCHS, build_demo_chain, create_chain, opened, small_template

DEMO_HASHES = [
    "1bc1f3b60fb096032426352eeeef248ec25282765816a06075e580da44594820",
    "d9a694400fdcbb7b9d4e1e89f680002aa16e64dba0c4e486560c5a7d61d628d1",
    "fcbe2e62ff0e8fd8592ea71cd88999ceef892ba5a6f7df59d7fab8322c5c23b3",
    "0d4efa3216e3450838995ca11064cfec9151fd47d45e258a463159043ffb3c49",
]
SMALL_HASHES = [
    "f149a7811006fbf4d43be458bb51e1e23c340c8f62847687a29afffae9207ef4",
    "9fabe955778c62c8ed062fdd72b185a7d1629159777eb4e19926ba80cc782405",
    "173e6bcd5fa5fd04d02338102fde117a40d813758ce1485b01fd4d72c90c6189",
]
LEGACY_DEMO_HASHES = [
    "1fe40e882bac76d4bd5bf41a3f54f97d4fedb5f3cb37a395975a99663c998683",
    "6a365fc8534744ed51f85780e328b7a82c62a37621bb18ee791db14fc947380c",
    "d46008ea75d2cb133b36edba6bc2d00391df7dd0e1cd6e6221685acb809aa3fe",
    "4ce97b9cf4900cdf3608f31eac0051ea97a50cc85f8ff6533563413c95ccebf1",
]
"""The demo chain before issue 7. Its parameters then lacked the rule set's name and the consensus numbers that lived
as module constants; hashed without those fields, today's chain is this one byte for byte."""
ADDED_TO_PARAMS = {
    "": ["rules"],
    "sprint": ["collateral_base_fraction", "small_network_caps", "genesis_weight"],
    "validation": ["z_threshold", "invalidation_quorum", "tie_tolerance", "logprob_epsilon", "min_normalising_positions",
                   "min_avg_traffic", "min_avg_values"],
    "rewards": ["epochs_to_full_reputation", "miss_rate_cutoff"],
}


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


@pytest.mark.slow
def test_hashed_without_the_fields_issue_7_added_to_the_params_the_demo_chain_is_the_legacy_one(tmp_path, monkeypatch):
    """The rule set and the consensus numbers moved into the params changed only the params: strip them from what is
    hashed (the genesis params hash and each epoch's params hash) and the blocks are the pre-issue-7 ones."""
    from gonka_pipelines.chain import intake
    from gonka_pipelines.protocol.crypto import hash_value
    from gonka_pipelines.protocol.params import GenesisParams

    def legacy(params: dict) -> dict:
        stripped = {key: dict(value) if isinstance(value, dict) else value for key, value in params.items()}
        for section, keys in ADDED_TO_PARAMS.items():
            for key in keys:
                (stripped[section] if section else stripped).pop(key)
        return stripped

    monkeypatch.setattr(GenesisParams, "params_hash", property(lambda self: hash_value(legacy(self.as_dict()))))
    monkeypatch.setattr(intake, "hash_value", lambda value: hash_value(legacy(value) if isinstance(value, dict) and "rules" in value
                                                                       else value))
    build_demo_chain(tmp_path / "legacy", DEMO_EPOCHS)
    assert block_hashes(DataLayout(tmp_path / "legacy")) == LEGACY_DEMO_HASHES
