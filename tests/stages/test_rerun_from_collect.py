"""A re-run of an epoch starts from a clean slate: whatever an interrupted attempt wrote (refunds included) is gone
before intake reads balances, so the block is the one an uninterrupted run gives."""

from __future__ import annotations

import pytest

from support.chains import create_chain, opened, run_stages, submit_tasks
from support.config import fast_genesis, small_network

TASKS = 20
BALANCE = 10 * (4 + 40) * 100
"""About ten tasks' escrow ((max_tokens 4 + prompt bytes) · price 100): half the submissions fail for balance."""


@pytest.mark.parametrize("interrupted_after", ["task_results", "rewards", "block_proposal"])
def test_a_rerun_after_an_interrupted_attempt_gives_the_uninterrupted_block(tmp_path, interrupted_after):
    genesis = fast_genesis(tmp_path / "config", tasks__tasks_per_capacity=1)  # executors overflow: tasks expire, refunded
    network = small_network(tmp_path / "config", [("host-alpha", 2), ("host-bravo", 1)], developers=(("dev-poor", BALANCE),))
    blocks = {}
    for name, interrupted in (("clean", False), ("rerun", True)):
        layout = create_chain(tmp_path / name, genesis, network)
        with opened(layout) as store:
            submit_tasks(store, layout, network, TASKS)
            if interrupted:
                run_stages(store, layout, 1, through=interrupted_after)
                refunded = store._scalar("SELECT coalesce(sum(balance_delta), 0) FROM transfers WHERE epoch = 1 AND kind = "
                                         "'expiry_refund'")
                assert refunded > 0, "the interrupted attempt refunded expired tasks"
            results = run_stages(store, layout, 1)
            blocks[name] = (results["block"], results["epoch_tasks"])
    assert blocks["rerun"] == blocks["clean"]
    assert blocks["clean"][1].rejected_by_reason.get("insufficient_balance", 0) > 0, "balance limits the workload"
