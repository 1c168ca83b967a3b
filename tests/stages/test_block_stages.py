"""block_proposal and block (PROTOCOL section 6): the post-state and the header over every commitment, signed by every
host with weight (final when signers hold > 2/3 of it); then the block is sealed and the epoch's inbox archived."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest

from gonka_pipelines.chain.core import ChainError, FinalizedEpochError
from gonka_pipelines.chain.invariants import check_epoch_supply
from gonka_pipelines.chain.verify import signature_problem, verify_chain
from gonka_pipelines.local.inbox import submission_id_of, waiting_names
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.block import choose_proposer, quorum_reached
from gonka_pipelines.protocol.crypto import MessageKind, hash_value, verify
from gonka_pipelines.stages.block import finalize_block, propose_block
from gonka_pipelines.stages.environment import build_environment, holding, quiet

from stage_kit import STAGE_EPOCH, StageRun, assert_idempotent, epoch_snapshot, template
from support.chains import opened


@pytest.fixture(scope="module")
def proposal(tmp_path_factory):
    run = StageRun.prepare(tmp_path_factory, "block_proposal")
    with run.store() as store:
        before = {"accounts": store.running_accounts(STAGE_EPOCH), "hosts": store.next_host_states(STAGE_EPOCH),
                  "supply": check_epoch_supply(store, STAGE_EPOCH), "unclaimed": store.unclaimed_held(STAGE_EPOCH)}
    header = run.run()
    with run.store() as store:
        after = {"block": store.block(STAGE_EPOCH), "epoch_status": store.epoch_status(STAGE_EPOCH),
                 "params_hash": store.params_hash(STAGE_EPOCH), "roots": store.epoch_roots(STAGE_EPOCH),
                 "accounts": store._records("SELECT * EXCLUDE (epoch) FROM account_states WHERE epoch = ? ORDER BY address", [STAGE_EPOCH]),
                 "hosts": store._records("SELECT * EXCLUDE (epoch) FROM host_states WHERE epoch = ? ORDER BY address", [STAGE_EPOCH]),
                 "head": store.head()}
    return run, header, before, after


def test_the_header_commits_to_the_epoch(proposal):
    run, header, _, after = proposal
    env, block = run.env, after["block"]
    genesis_time = env.params.genesis_time
    assert block["header"] == header.as_dict()
    assert header.height == STAGE_EPOCH and header.chain_id == env.chain_id
    assert header.prev_hash == env.prev_hash == after["head"].hash, "it follows the head (block 1)"
    assert header.timestamp == (genesis_time + timedelta(seconds=STAGE_EPOCH * env.params.epoch_seconds)).isoformat()
    assert header.params_hash == after["params_hash"] == hash_value(env.params.as_dict())
    assert header.roots == after["roots"] and len(header.roots) >= 6
    assert header.proposer == choose_proposer(env.prev_hash, env.weights)
    assert (block["hash"], block["prev_hash"], block["status"]) == (header.hash, env.prev_hash, "proposed")
    assert header.hash == hash_value(header.as_dict())
    assert after["epoch_status"] == "proposed" and after["head"].height == STAGE_EPOCH - 1, "not final yet"


def test_every_host_with_weight_signs_and_the_signers_pass_two_thirds(proposal):
    run, header, _, after = proposal
    env = run.env
    signatures = after["block"]["signatures"]
    assert {s["signer"]: s["weight"] for s in signatures} == {a: w for a, w in env.weights.items() if w > 0}
    assert len(signatures) == len(env.hosts) - 1, "all but host-fake, whose weight in force is 0"
    for signature in signatures:
        assert verify(env.keys[signature["signer"]].public_key, env.chain_id, MessageKind.BLOCK, header.as_dict(), signature["signature"])
    signed, total = sum(s["weight"] for s in signatures), sum(env.weights.values())
    assert signed == total and quorum_reached(signed, total)
    # the 2/3 rule on these weights: strictly more than two thirds is needed
    assert not quorum_reached(2 * total // 3, total) and quorum_reached(2 * total // 3 + 1, total)


def test_the_post_state_is_the_running_accounts_and_the_next_host_states(proposal):
    _, _, before, after = proposal
    assert after["accounts"] == before["accounts"]
    assert after["hosts"] == before["hosts"]
    held = before["unclaimed"]
    assert held > 0, "host-lazy's refused payout is held until the next epoch burns it"
    assert sum(a["balance"] + a["escrow"] + a["locked"] + a["collateral"] for a in after["accounts"]) + held == before["supply"]
    run = proposal[0]
    fake = {h.address for h in run.env.hosts if h.behaviour == "fake_hits"}
    assert {h["address"] for h in after["hosts"] if h["weight"] == 0} == fake, \
        "the fake host's rejected sprint leaves it without weight for the next epoch (INVALID costs this epoch's weight)"


def test_proposing_opens_the_chain_once_and_computes_nothing(proposal):
    run = proposal[0]
    assert run.opener.opens == 1 and dict(run.compute.calls) == {}


def test_reproposing_is_idempotent(tmp_path_factory):
    assert_idempotent(tmp_path_factory, "block_proposal")


def test_a_proposal_needs_a_collected_epoch(genesis_layout):
    with opened(genesis_layout) as store:
        env = build_environment(store, genesis_layout, 1)
        with pytest.raises(ChainError, match="epoch 1 has not been opened; run its collect stage first"):
            propose_block(env, holding(store), quiet)
        assert store.block(1) is None


# -- block -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finalized(tmp_path_factory):
    run = StageRun.prepare(tmp_path_factory, "block")
    with run.store() as store:
        proposed = store.block(STAGE_EPOCH)
        submissions = store.submission_ids(STAGE_EPOCH)
        before = epoch_snapshot(store, STAGE_EPOCH)
    pending_before = {submission_id_of(name) for name in waiting_names(run.layout.inbox)}
    block_hash = run.run()
    with run.store() as store:
        after = {"head": store.head(), "block": store.block(STAGE_EPOCH), "status": store.epoch_status(STAGE_EPOCH),
                 "report": verify_chain(store), "snapshot": epoch_snapshot(store, STAGE_EPOCH)}
    return run, block_hash, proposed, submissions, pending_before, before, after


def test_finalizing_seals_the_proposed_block(finalized):
    _, block_hash, proposed, _, _, _, after = finalized
    assert block_hash == proposed["hash"] == after["head"].hash and after["head"].height == STAGE_EPOCH
    assert after["block"]["status"] == after["status"] == "finalized"
    assert {k: v for k, v in after["block"].items() if k != "status"} == {k: v for k, v in proposed.items() if k != "status"}
    report = after["report"]
    assert (report.blocks_verified, report.head, report.first_problem) == (STAGE_EPOCH + 1, STAGE_EPOCH, None)


def test_finalizing_changes_only_the_blocks_status_and_archives_the_inbox(finalized):
    run, _, _, submissions, pending_before, before, after = finalized
    changed = {table for table in before if before[table] != after["snapshot"][table]}
    assert changed == {"blocks", "epochs"}
    assert set(submissions) <= pending_before and submissions, "the epoch's submissions waited in the inbox"
    pending_after = {submission_id_of(name) for name in waiting_names(run.layout.inbox)}
    assert pending_after == pending_before - set(submissions)
    assert all((run.layout.inbox / "processed" / f"{s}.json").exists() for s in submissions)
    assert run.opener.opens == 1 and dict(run.compute.calls) == {}


def test_a_finalized_block_cannot_be_finalized_or_proposed_again(finalized):
    run, _, _, _, _, _, after = finalized
    for stage in (finalize_block, propose_block):
        with pytest.raises(FinalizedEpochError, match=r"epoch 2 is finalized .* Launch the next epoch instead: partition 3"):
            stage(run.env, run.opener, quiet)
    with run.store() as store:
        assert epoch_snapshot(store, STAGE_EPOCH) == after["snapshot"]


def test_finalizing_needs_a_proposal(tmp_path_factory):
    run = StageRun.prepare(tmp_path_factory, "block_proposal")  # the chain as the rewards stage left it
    with pytest.raises(ChainError, match="block 2 has not been proposed; run the block_proposal stage first"):
        finalize_block(run.env, run.opener, quiet)
    with run.store() as store:
        assert store.epoch_status(STAGE_EPOCH) == "open" and store.head().height == STAGE_EPOCH - 1


def test_a_block_without_two_thirds_of_the_weight_does_not_verify(tmp_path_factory, tmp_path):
    """Drop the heaviest signatures of the finalized block until the rest hold at most 2/3: verify_chain says so."""
    layout = DataLayout(shutil.copytree(template(tmp_path_factory, "block").root, tmp_path / "chain"))
    with opened(layout) as store:
        signatures = sorted(store.block(STAGE_EPOCH)["signatures"], key=lambda s: -s["weight"])
        total = sum(s["weight"] for s in signatures)
        dropped, remaining = [], total
        while 3 * remaining > 2 * total:
            dropped.append(signatures[len(dropped)]["signer"])
            remaining -= signatures[len(dropped) - 1]["weight"]
        store._execute("DELETE FROM block_signatures WHERE height = ? AND list_contains(?, signer)", [STAGE_EPOCH, dropped])
        report = verify_chain(store)
    assert report.first_problem is not None and report.first_problem.height == STAGE_EPOCH
    assert f"signers hold {remaining} of {total} weight, not more than 2/3" in str(report.first_problem)


def test_an_invalid_host_loses_this_epochs_weight_and_keeps_the_one_it_won(tmp_path_factory):
    """PROTOCOL section 4: INVALID sets a host's weight to 0 for the rest of the epoch, so it neither proposes nor signs
    the epoch's block; the weight its sprint won governs the next epoch as usual."""
    run = StageRun.prepare(tmp_path_factory, "block_proposal")
    honest = sorted(h.address for h in run.env.hosts if h.behaviour == "honest" and run.env.weights[h.address] > 0)
    host = honest[0]
    with opened(run.layout) as store:
        store._execute("UPDATE host_epochs SET status = 'INVALID' WHERE epoch = ? AND address = ?", [STAGE_EPOCH, host])
        won = store._scalar("SELECT weight FROM epoch_weights WHERE epoch = ? AND address = ?", [STAGE_EPOCH, host])
    header = run.run()
    with run.store() as store:
        assert store.signing_weights(STAGE_EPOCH) == {a: (0 if a == host else w) for a, w in run.env.weights.items()}
        assert host not in {s["signer"] for s in store.block_signatures(STAGE_EPOCH)} and header.proposer != host
        assert store.weights(STAGE_EPOCH)[host] == won > 0
        assert signature_problem(store, STAGE_EPOCH) is None, "the verifier counts the same signing weights"
