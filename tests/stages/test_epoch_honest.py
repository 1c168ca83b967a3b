"""An all-honest network over 20 epochs: nobody is flagged, the chain verifies, supply is conserved every epoch and
every epoch mints exactly R(e), split without losing a base unit."""

from __future__ import annotations

from itertools import pairwise

import pytest

from gonka_pipelines.chain.invariants import check_epoch_supply
from gonka_pipelines.chain.verify import verify_chain
from gonka_pipelines.protocol.rewards import epoch_reward, split_reward
from gonka_pipelines.reports.summary import host_summaries
from gonka_pipelines.stages.block import finalize_block, propose_block
from gonka_pipelines.stages.environment import build_environment, holding, quiet
from gonka_pipelines.stages.pipeline import run_stages

from support.chains import create_chain, opened, submit_tasks
from support.config import fast_genesis, small_network

pytestmark = pytest.mark.slow

EPOCHS = 20
TASKS_PER_EPOCH = 4
HOSTS = [("host-alpha", 3), ("host-bravo", 2), ("host-charlie", 2), ("host-delta", 3)]
DEVELOPER_BALANCE = 10**12


@pytest.fixture(scope="module")
def honest_chain(tmp_path_factory):
    """(layout, genesis, supply checked after each epoch, supply of each post-state) after EPOCHS epochs."""
    base = tmp_path_factory.mktemp("honest")
    genesis = fast_genesis(base / "config")
    network = small_network(base / "config", HOSTS, (("dev-ada", DEVELOPER_BALANCE),), key_seed="honest-network")
    layout = create_chain(base / "chain", genesis, network)
    supply_mid, supply_after = [], []
    with opened(layout) as store:
        for epoch in range(1, EPOCHS + 1):
            submit_tasks(store, layout, network, TASKS_PER_EPOCH, tag=f"e{epoch} ")
            env, open_chain = build_environment(store, layout, epoch), holding(store)
            run_stages(env, open_chain, quiet, through="rewards")
            supply_mid.append(check_epoch_supply(store, epoch))  # the blocking check's view, before the block
            propose_block(env, open_chain, quiet)
            finalize_block(env, open_chain, quiet)
            supply_after.append(check_epoch_supply(store, epoch))
    return layout, genesis, supply_mid, supply_after


@pytest.fixture(scope="module")
def chain(honest_chain):
    with opened(honest_chain[0], read_only=True) as store:
        yield store


def test_every_epoch_is_finalized_and_the_chain_verifies(chain):
    assert chain.head().height == EPOCHS
    report = verify_chain(chain)
    assert (report.blocks_verified, report.head, report.first_problem) == (EPOCHS + 1, EPOCHS, None)


def test_every_task_was_taken_and_run(chain):
    per_epoch = dict(chain._query("SELECT epoch, count(*) FROM tasks GROUP BY epoch"))
    assert per_epoch == {e: TASKS_PER_EPOCH for e in range(1, EPOCHS + 1)}
    assert chain._scalar("SELECT count(*) FROM rejected_tasks") == 0
    assert dict(chain._query("SELECT status, count(*) FROM task_results GROUP BY 1")) == {"completed": EPOCHS * TASKS_PER_EPOCH}


def test_no_sprint_rejected_no_batch_refused(chain):
    assert chain._scalar("SELECT count(*) FROM epoch_weights") == EPOCHS * len(HOSTS)
    assert chain._query("SELECT epoch, address FROM epoch_weights WHERE NOT sprint_accepted OR hits = 0 OR weight = 0") == []
    assert chain._scalar("SELECT count(*) FROM poc_batches WHERE status != 'accepted'") == 0
    assert chain._scalar("SELECT count(*) FROM poc_verdicts WHERE NOT valid OR mismatches > 0 OR NOT recomputed") == 0


def test_no_host_is_invalid_and_no_task_invalidated(chain):
    assert chain._query("SELECT epoch, address FROM host_epochs WHERE status = 'INVALID' OR invalidated > 0") == []
    assert chain._query("SELECT DISTINCT outcome FROM task_outcomes ORDER BY 1") in ([("passed",)], [("passed",), ("unvalidated",)])
    assert chain._scalar("SELECT count(*) FROM task_verdicts WHERE NOT passed") == 0


def test_no_claim_refused_and_nothing_burned(chain):
    rows = chain._records("SELECT * FROM rewards ORDER BY epoch, address")
    assert len(rows) == EPOCHS * len(HOSTS)
    for row in rows:
        assert row["claimed"] is True and row["status"] != "INVALID"
        assert row["withheld"] == 0 and row["slashed"] == 0
        assert row["payout"] == row["reward"] + row["work_coins"]
    assert chain._query("SELECT epoch, burned FROM emissions WHERE burned != 0") == []
    assert chain._query("SELECT epoch, address FROM host_epochs WHERE done_validations < required_validations "
                       "OR contradicted_votes > 0") == []
    summaries = host_summaries(chain)
    assert len(summaries) == len(HOSTS)
    assert all((s["sprints_rejected"], s["epochs_invalid"], s["claims_refused"]) == (0, 0, 0) and s["paid"] > 0 for s in summaries)


def test_supply_invariant_holds_after_every_epoch(chain, honest_chain):
    _, _, supply_mid, supply_after = honest_chain
    genesis_supply = chain.genesis_supply()
    assert genesis_supply == DEVELOPER_BALANCE
    minted = [m for (m,) in chain._query("SELECT minted FROM emissions ORDER BY epoch")]
    expected = [genesis_supply + sum(minted[:e]) for e in range(1, EPOCHS + 1)]
    assert supply_mid == expected and supply_after == expected
    # the stored post-state of each epoch holds exactly that supply too
    held = [s for (s,) in chain._query(
        "SELECT sum(balance + escrow + locked + collateral) FROM account_states WHERE epoch > 0 GROUP BY epoch ORDER BY epoch")]
    assert held == expected


def test_each_epoch_mints_its_scheduled_reward(chain, honest_chain):
    genesis = honest_chain[1]
    r0, decay = genesis.emission.initial_reward, genesis.emission.decay_rate
    rows = chain._records("SELECT * FROM emissions ORDER BY epoch")
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    for row in rows:
        assert row["scheduled"] == row["minted"] == epoch_reward(row["epoch"], r0, decay)
        assert row["minted"] == epoch_reward(row["epoch"], r0, 0.000475)  # the local profile uses Gonka's decay
    assert rows[0]["minted"] == r0
    assert all(a["minted"] > b["minted"] for a, b in pairwise(rows)), "R(e) decays"


def test_rewards_split_minted_exactly_by_weight(chain):
    for epoch in range(1, EPOCHS + 1):
        minted = chain._scalar("SELECT minted FROM emissions WHERE epoch = ?", [epoch])
        rewards = {a: (w, tw, r) for a, w, tw, r in chain._query(
            "SELECT address, weight, total_weight, reward FROM rewards WHERE epoch = ?", [epoch])}
        assert sum(r for _, _, r in rewards.values()) == minted
        weights = {a: w for a, (w, _, _) in rewards.items()}
        assert all(tw == sum(weights.values()) for _, tw, _ in rewards.values())
        assert {a: r for a, (_, _, r) in rewards.items()} == split_reward(minted, weights)
        # the final weights are the sprint's weights (nobody INVALID)
        assert weights == dict(chain._query("SELECT address, weight FROM epoch_weights WHERE epoch = ?", [epoch]))


def test_rewards_vest_and_reach_balances(chain):
    """vesting_epochs = 1 in the local profile: each reward unlocks in its own epoch, so nothing stays locked."""
    assert chain._scalar("SELECT sum(locked) FROM account_states") == 0
    for epoch in range(1, EPOCHS + 1):
        hosts = dict(chain._query("SELECT address, payout FROM rewards WHERE epoch = ?", [epoch]))
        before = dict(chain._query("SELECT address, balance FROM account_states WHERE epoch = ?", [epoch - 1]))
        after = dict(chain._query("SELECT address, balance FROM account_states WHERE epoch = ?", [epoch]))
        assert {a: after[a] - before[a] for a in hosts} == hosts
