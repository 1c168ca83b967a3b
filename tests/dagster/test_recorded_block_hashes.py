"""The block and signer-set hashes Dagster recorded when each block was finalized anchor the chain: `gonka verify-chain`
compares with them by default, so deleting the head block (with its signatures and its epoch's status) or dropping one
of the head's signatures no longer verifies."""

from __future__ import annotations

import pytest

from gonka_pipelines import cli
from gonka_pipelines.chain.verify import Anchor, verify_chain
from gonka_pipelines.defs.launch import dagster_instance, recorded_anchors, run_next_epoch
from gonka_pipelines.protocol.block import signature_set_hash

from support.chains import opened

pytestmark = pytest.mark.slow


def test_verify_chain_compares_with_the_hashes_dagster_recorded(genesis_layout, submit, capsys):
    instance = dagster_instance(genesis_layout)  # persistent, under the chain folder (DAGSTER_HOME is unset in tests)
    for epoch in (1, 2):
        submit(2, start_nonce=2 * (epoch - 1))
        assert run_next_epoch(genesis_layout, instance).success
    instance.dispose()
    with opened(genesis_layout, read_only=True) as store:
        hashes = {height: store.block_hash(height) for height in (1, 2)}
        anchors = {height: Anchor(hashes[height], signature_set_hash(store.block_signatures(height))) for height in (1, 2)}
    assert recorded_anchors(genesis_layout) == anchors
    assert cli.main(["--data-dir", str(genesis_layout.root), "verify-chain"]) == 0
    assert "matches 2 block hash(es) kept outside the database" in capsys.readouterr().out
    with opened(genesis_layout) as store:
        dropped = store.block_signatures(2)[-1]
        store._execute("DELETE FROM block_signatures WHERE height = 2 AND signer = ?", [dropped["signer"]])
        assert verify_chain(store).first_problem is None, "nothing inside the database commits to the head's signatures"
        problem = verify_chain(store, anchors).first_problem
        assert problem is not None and "a signature was dropped, added or changed" in problem.message
        store._insert("block_signatures", [{"height": 2, **dropped}])
    with opened(genesis_layout) as store:
        store._execute("DELETE FROM block_signatures WHERE height = 2")
        store._execute("DELETE FROM blocks WHERE height = 2")
        store._execute("UPDATE epochs SET status = 'open' WHERE epoch = 2")
    assert cli.main(["--data-dir", str(genesis_layout.root), "verify-chain"]) == 1
    assert capsys.readouterr().err.startswith(f"INCONSISTENT block 2: missing: the anchor says block 2 is {hashes[2][:12]}")
    assert cli.main(["--data-dir", str(genesis_layout.root), "verify-chain", "--no-dagster"]) == 0


def test_a_chain_without_a_dagster_instance_has_no_recorded_hashes(genesis_layout):
    assert recorded_anchors(genesis_layout) is None
