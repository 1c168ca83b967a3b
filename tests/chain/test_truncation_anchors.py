"""A chain cut short or rewritten under its own hashes verifies on its own; block hashes kept outside the database
(an auditor's pinned head, the hashes Dagster recorded) catch it."""

from __future__ import annotations

import pytest

from gonka_pipelines import cli
from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.chain.verify import Anchor, verify_chain


def drop_head(store) -> None:
    """Cut the head off consistently: its block and signatures go and its epoch reads as open again."""
    store._execute("DELETE FROM block_signatures WHERE height = 3")
    store._execute("DELETE FROM blocks WHERE height = 3")
    store._execute("UPDATE epochs SET status = 'open' WHERE epoch = 3")


def unfinalize_head(store) -> None:
    """Set the head back to a proposal, in both status columns."""
    store._execute("UPDATE blocks SET status = 'proposed' WHERE height = 3")
    store._execute("UPDATE epochs SET status = 'proposed' WHERE epoch = 3")


@pytest.mark.parametrize("cut", [drop_head, unfinalize_head], ids=["head block deleted", "head set back to proposed"])
def test_a_truncated_chain_verifies_alone_but_not_against_its_anchor(demo_store, cut):
    anchors = {3: Anchor(demo_store.block_hash(3))}
    assert verify_chain(demo_store, anchors).first_problem is None
    cut(demo_store)
    assert verify_chain(demo_store).first_problem is None, "without an anchor a shorter chain is still consistent"
    report = verify_chain(demo_store, anchors)
    assert report.first_problem is not None and report.first_problem.height == 3
    assert "cut short" in report.first_problem.message and report.head == 2


@pytest.mark.parametrize("sql, message", [
    ("DELETE FROM blocks WHERE height = 3", "epoch 3 is 'finalized' (epochs.status) beyond the finalized head 2"),
    ("UPDATE blocks SET status = 'proposed' WHERE height = 3", "epoch 3 is 'finalized' (epochs.status) beyond the finalized head 2"),
    ("UPDATE epochs SET status = 'open' WHERE epoch = 2", "epochs.status is 'open' at or below the finalized head 3"),
    ("UPDATE epochs SET status = 'proposed' WHERE epoch = 3", "epochs.status is 'proposed' at or below the finalized head 3"),
    ("INSERT INTO chain_meta VALUES ('genesis_supply', '1')", "chain_meta holds the keys ['chain_id', 'genesis_supply']"),
], ids=["head block alone deleted", "head block alone unfinalized", "epoch reopened", "epoch status only", "forged meta"])
def test_a_half_done_cut_or_a_changed_status_is_caught_without_an_anchor(demo_store, sql, message):
    demo_store._execute(sql)
    problem = verify_chain(demo_store).first_problem
    assert problem is not None and message in problem.message


def test_an_anchor_names_a_replaced_block(demo_store):
    report = verify_chain(demo_store, {2: Anchor("ab" * 32)})
    assert report.first_problem is not None and str(report.first_problem).startswith("block 2: is ")
    assert "it was replaced" in report.first_problem.message


def test_cli_expect_head_pins_a_hash_kept_elsewhere(demo_layout, capsys):
    with ChainStore.open(demo_layout.database, read_only=True) as store:
        pinned = store.block_hash(3)[:16]
    assert cli.main(["--data-dir", str(demo_layout.root), "verify-chain", "--expect-head", pinned]) == 0
    assert "matches 1 block hash(es) kept outside the database" in capsys.readouterr().out


def test_cli_expect_head_reports_a_truncated_chain(demo_layout, capsys):
    with ChainStore.open(demo_layout.database) as store:
        pinned = store.block_hash(3)
        drop_head(store)
    assert cli.main(["--data-dir", str(demo_layout.root), "verify-chain"]) == 0, "alone, the shorter chain verifies"
    capsys.readouterr()
    assert cli.main(["--data-dir", str(demo_layout.root), "verify-chain", "--expect-head", pinned]) == 1
    assert capsys.readouterr().err.startswith(f"INCONSISTENT no finalized block has hash {pinned[:12]}…")


def test_a_hash_must_be_long_enough_to_name_one_block(demo_store):
    with pytest.raises(ChainError, match="12 or more"):
        demo_store.height_of("abc")
    assert demo_store.height_of(demo_store.block_hash(1)[:12]) == 1
