"""Blocks (PROTOCOL section 6): genesis, proposal and finality, immutability, epoch order, quorum, full
re-verification that names the block of any tampered row, the CLI, and Merkle inclusion proofs of rows."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gonka_pipelines import cli
from gonka_pipelines.chain.commitments import BY_NAME, epoch_roots, row_leaf
from gonka_pipelines.chain.proofs import prove_row
from gonka_pipelines.chain.store import (
    ChainError,
    ChainStore,
    EpochOrderError,
    FinalizedEpochError,
)
from gonka_pipelines.chain.verify import verify_block, verify_chain
from gonka_pipelines.local.config import load_genesis
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.block import (
    GENESIS_PREV_HASH,
    BlockHeader,
    choose_proposer,
    quorum_reached,
)
from gonka_pipelines.protocol.crypto import MessageKind, verify
from gonka_pipelines.protocol.merkle import MerkleProof, verify_proof
from gonka_pipelines.simulation.workload import submit_demo_workload
from gonka_pipelines.stages.block import finalize_block, propose_block
from gonka_pipelines.stages.collect import run_collect
from gonka_pipelines.stages.environment import EpochEnvironment, build_environment, epoch_parameters, holding, host_keys, quiet
from gonka_pipelines.stages.genesis import init_chain

from support.chains import DEMO_EPOCHS

TABLES = ("accounts", "hosts", "epochs", "submissions", "tasks", "rejected_tasks", "transfers", "account_states",
          "host_states", "blocks", "block_signatures", "lineage", "chain_meta")


def snapshot(store: ChainStore) -> dict[str, list[tuple]]:
    return {table: store._query(f"SELECT * FROM {table} ORDER BY ALL") for table in TABLES}


def collect(env: EpochEnvironment, store: ChainStore):
    return run_collect(env, holding(store), quiet)


def propose(env: EpochEnvironment, store: ChainStore) -> BlockHeader:
    return propose_block(env, holding(store), quiet)


def finalize(env: EpochEnvironment, store: ChainStore) -> str:
    return finalize_block(env, holding(store), quiet)


def forged_environment(store: ChainStore, layout: DataLayout, epoch: int) -> EpochEnvironment:
    """The environment of the head's successor relabelled as `epoch`: what a stage would get if the environment were
    built wrongly, so that the stages' own refusals are tested, not only build_environment's."""
    return dataclasses.replace(build_environment(store, layout, store.head().height + 1), epoch=epoch)


# -- genesis ------------------------------------------------------------------------------------


def test_genesis_block_is_signed_by_every_genesis_host(layout, genesis, network):
    with ChainStore.open(layout.database) as store:
        head = init_chain(store, layout, genesis, network)
        block = store.block(0)
        hosts = dict(store._query("SELECT name, address FROM hosts"))
        keys = dict(store._query("SELECT address, public_key FROM hosts"))
        assert set(hosts) == {h.name for h in network.hosts}
        assert head.height == 0 and head.hash == block["hash"] and block["status"] == "finalized"
        header = BlockHeader(**block["header"])
        assert header.hash == block["hash"]
        assert (header.chain_id, header.height, header.prev_hash) == (genesis.chain_id, 0, GENESIS_PREV_HASH)
        assert header.params_hash == genesis.params_hash and header.timestamp == genesis.block_timestamp(0)
        assert header.proposer in keys
        assert header.roots == epoch_roots(store._connection, 0)
        assert sorted(s["signer"] for s in block["signatures"]) == sorted(hosts.values())
        for signature in block["signatures"]:
            assert signature["weight"] == 1
            assert verify(keys[signature["signer"]], genesis.chain_id, MessageKind.BLOCK, header.as_dict(), signature["signature"])
        report = verify_chain(store)
        assert (report.blocks_verified, report.head, report.first_problem) == (1, 0, None)


def test_genesis_state_and_key_files(layout, genesis, network):
    with ChainStore.open(layout.database) as store:
        init_chain(store, layout, genesis, network)
        balances = {name: balance for name, balance in store._query(
            "SELECT a.name, s.balance FROM account_states s JOIN accounts a USING (address) WHERE s.epoch = 0")}
        assert balances == {d.name: d.balance for d in network.developers} | {h.name: 0 for h in network.hosts}
        assert store._scalar("SELECT sum(balance + escrow + collateral) FROM account_states WHERE epoch = 0") == network.genesis_supply
        assert store.meta("chain_id") == genesis.chain_id and store.genesis_supply() == network.genesis_supply
        assert store._query("SELECT key FROM chain_meta") == [("chain_id",)] and store.genesis() == genesis
        assert store.weights(0) == {address: 1 for (address,) in store._query("SELECT address FROM hosts")}
    key_files = sorted(p.name for p in layout.keys.iterdir())
    assert key_files == sorted(f"{p.name}.key" for p in (*network.hosts, *network.developers))
    assert {oct(p.stat().st_mode & 0o777) for p in layout.keys.iterdir()} == {"0o600"}
    # private keys never enter the database
    with ChainStore.open(layout.database, read_only=True) as store:
        dump = json.dumps(snapshot(store), default=str)
    assert not any(p.read_text().strip() in dump for p in layout.keys.iterdir())


def test_init_is_idempotent_and_refuses_another_chain(genesis_store, genesis_layout, genesis, network):
    head = genesis_store.head()
    assert init_chain(genesis_store, genesis_layout, genesis, network) == head
    assert genesis_store._scalar("SELECT count(*) FROM blocks") == 1
    with pytest.raises(ChainError, match=r"already holds chain 'gonka-local-1'; use another data dir for 'gonka-mainnet'"):
        init_chain(genesis_store, genesis_layout, load_genesis("mainnet"), network)


def test_genesis_is_deterministic(tmp_path, genesis, network):
    hashes = []
    for name in ("a", "b"):
        layout = DataLayout(tmp_path / name)
        with ChainStore.open(layout.database) as store:
            hashes.append(init_chain(store, layout, genesis, network).hash)
    assert hashes[0] == hashes[1]


# -- propose and finalize -----------------------------------------------------------------------


@pytest.fixture
def proposed_store(proposed_layout):
    with ChainStore.open(proposed_layout.database) as store:
        yield store


def test_propose_then_finalize_an_epoch(proposed_store, proposed_layout, genesis):
    chain = proposed_store
    genesis_hash = chain.block(0)["hash"]
    ids = {p.stem for p in proposed_layout.inbox.glob("*.json")}
    assert len(ids) == 6
    header = BlockHeader(**chain.block(1)["header"])

    assert chain.head().height == 0  # a proposal is not final
    assert chain.epoch_status(1) == "proposed" and chain.block(1)["status"] == "proposed"
    assert chain.block(1)["hash"] == header.hash
    assert (header.height, header.prev_hash, header.chain_id) == (1, genesis_hash, genesis.chain_id)
    assert header.timestamp == genesis.block_timestamp(1)
    assert header.params_hash == chain._scalar("SELECT params_hash FROM epochs WHERE epoch = 1")
    assert header.roots == epoch_roots(chain._connection, 1)
    assert {"tasks", "rejections", "transfers", "accounts", "hosts"} <= set(header.roots)
    assert header.proposer == choose_proposer(genesis_hash, chain.weights(0))
    signers = {s["signer"]: s["weight"] for s in chain.block(1)["signatures"]}
    assert signers == {a: w for a, w in chain.weights(0).items() if w > 0}
    assert verify_block(chain, 1, genesis_hash) is None
    assert chain._scalar("SELECT count(*) FROM tasks WHERE epoch = 1") == 5
    # the post-state is the previous one plus the epoch's transfers, escrow among them
    assert chain._records("SELECT address, balance, escrow, locked, collateral FROM account_states WHERE epoch = 1 "
                          "ORDER BY address") == chain.running_accounts(1)
    assert chain._scalar("SELECT count(*) FROM transfers WHERE epoch = 1 AND kind = 'escrow'") == 5
    assert list(proposed_layout.inbox.glob("*.json")), "files stay in the inbox until the block is final"

    block_hash = finalize(build_environment(chain, proposed_layout, 1), chain)
    assert block_hash == header.hash and chain.head().height == 1 and chain.head().hash == header.hash
    assert chain.epoch_status(1) == "finalized" and chain.block(1)["status"] == "finalized"
    assert not list(proposed_layout.inbox.glob("*.json"))
    assert {p.stem for p in (proposed_layout.inbox / "processed").glob("*.json")} == ids
    assert verify_chain(chain).blocks_verified == 2


def test_finalize_needs_a_proposal(genesis_store, genesis_layout, submit):
    submit(1)
    env = build_environment(genesis_store, genesis_layout, 1)
    assert collect(env, genesis_store).accepted == 1
    with pytest.raises(ChainError, match="block 1 has not been proposed; run the block_proposal stage first"):
        finalize(env, genesis_store)
    assert genesis_store.head().height == 0 and genesis_store.epoch_status(1) == "open"


def test_propose_refuses_an_epoch_that_was_never_collected(genesis_store, genesis_layout):
    before = snapshot(genesis_store)
    with pytest.raises(ChainError, match="epoch 1 has not been opened; run its collect stage first"):
        propose(build_environment(genesis_store, genesis_layout, 1), genesis_store)
    assert genesis_store.block(1) is None and snapshot(genesis_store) == before


# -- immutability and order ---------------------------------------------------------------------


def test_the_demo_chain_verifies(demo_store):
    assert DEMO_EPOCHS == 3
    report = verify_chain(demo_store)
    assert (report.blocks_verified, report.head, report.first_problem) == (4, 3, None)
    for epoch in (1, 2, 3):
        assert demo_store._scalar("SELECT count(*) FROM tasks WHERE epoch = ?", [epoch]) > 0
        assert demo_store._scalar("SELECT count(*) FROM rejected_tasks WHERE epoch = ?", [epoch]) > 0
        assert demo_store._scalar("SELECT count(*) FROM transfers WHERE epoch = ?", [epoch]) > 0
    assert [demo_store.block(h)["header"]["prev_hash"] for h in (1, 2, 3)] == [demo_store.block(h)["hash"] for h in (0, 1, 2)]
    assert [demo_store.prev_hash(h) for h in (1, 2, 3)] == [demo_store.block(h)["hash"] for h in (0, 1, 2)]


FINALIZED_MESSAGE = r"^epoch {e} is finalized \(block {e}\); its rows are immutable\..*\b4\b"
"""Names the epoch, says why, and names the epoch to run instead (the head is block 3)."""


def launch_attempts(store, layout, epoch) -> list:
    """Every way to start or write an epoch: building its environment, each block stage with an environment forged
    for it, the writability check, and opening it."""
    forged = forged_environment(store, layout, epoch)
    params = epoch_parameters(store.genesis(), epoch)
    return [lambda: build_environment(store, layout, epoch), lambda: collect(forged, store), lambda: propose(forged, store),
            lambda: finalize(forged, store), lambda: store.require_writable(epoch), lambda: store.open_epoch(params)]


@pytest.mark.parametrize("epoch", [0, 1, 2, 3])
def test_a_finalized_epoch_is_immutable(demo_store, demo_layout, network, epoch):
    before = snapshot(demo_store)
    pending = submit_demo_workload(demo_store, demo_layout, network, 4)
    assert sum(pending.values()) > 0
    inbox = sorted(p.name for p in demo_layout.inbox.glob("*.json"))
    message = FINALIZED_MESSAGE.format(e=epoch)
    for attempt in launch_attempts(demo_store, demo_layout, epoch) + [
            lambda: demo_store._replace_epoch_rows(epoch, ["tasks"]),
            lambda: demo_store.write_post_state(epoch, []),
            lambda: demo_store.finalize(epoch)]:
        with pytest.raises(FinalizedEpochError, match=message):
            attempt()
    assert snapshot(demo_store) == before
    assert sorted(p.name for p in demo_layout.inbox.glob("*.json")) == inbox
    assert verify_chain(demo_store).first_problem is None


def test_finalizing_twice_is_refused(demo_store, demo_layout):
    head = demo_store.head()
    with pytest.raises(FinalizedEpochError, match=FINALIZED_MESSAGE.format(e=3)):
        finalize(forged_environment(demo_store, demo_layout, 3), demo_store)
    assert demo_store.head() == head
    assert verify_chain(demo_store).first_problem is None


@pytest.mark.parametrize("epoch", [5, 10])
def test_an_epoch_out_of_order_is_refused(demo_store, demo_layout, epoch):
    before = snapshot(demo_store)
    message = rf"^epoch {epoch} cannot run now: the head is block 3\b.*\b4\b"
    for attempt in launch_attempts(demo_store, demo_layout, epoch):
        with pytest.raises(EpochOrderError, match=message):
            attempt()
    assert snapshot(demo_store) == before


def test_errors_are_chain_errors():
    assert issubclass(FinalizedEpochError, ChainError) and issubclass(EpochOrderError, ChainError)


# -- quorum and proposer ------------------------------------------------------------------------


@pytest.mark.parametrize("signed, total, final", [
    (2, 3, False), (3, 3, True), (4, 6, False), (5, 6, True), (200, 300, False), (201, 300, True),
    (3, 5, False), (4, 5, True), (0, 0, False), (0, 5, False), (1, 1, True),
])
def test_quorum_needs_strictly_more_than_two_thirds(signed, total, final):
    assert quorum_reached(signed, total) is final


@settings(deadline=None)
@given(st.integers(0, 10**12), st.integers(1, 10**12))
def test_quorum_matches_exact_arithmetic(signed, total):
    assert quorum_reached(signed, total) == (Fraction(signed, total) > Fraction(2, 3))


def test_proposer_is_replayable_weighted_and_needs_weight():
    weights = {"a": 1, "b": 0, "c": 3}
    picks = [choose_proposer(f"{i:064x}", weights) for i in range(400)]
    assert picks == [choose_proposer(f"{i:064x}", weights) for i in range(400)]
    assert "b" not in picks and 200 < picks.count("c") < 400
    with pytest.raises(ValueError, match="no host has weight"):
        choose_proposer(GENESIS_PREV_HASH, {"a": 0})


# -- tampering: verify_chain names exactly the block ----------------------------------------------


def first_id(store: ChainStore, table: str, key: str, epoch: int) -> str:
    return store._scalar(f"SELECT min({key}) FROM {table} WHERE epoch = ?", [epoch])


def sql(statement: str, *args):
    """A tamper step: one SQL statement; args may be callables of the store (evaluated at tamper time)."""
    return lambda store: store._connection.execute(statement, [a(store) if callable(a) else a for a in args])


def edit_header(at: int, rehash: bool, **changes):
    """Change header fields of a stored block; with rehash the stored hash follows (a forger without keys)."""
    def tamper(store: ChainStore) -> None:
        header = store.block(at)["header"] | changes
        block_hash = BlockHeader(**header).hash if rehash else store.block(at)["hash"]
        store._connection.execute("UPDATE blocks SET header_json = ?, hash = ? WHERE height = ?",
                                  [json.dumps(header, sort_keys=True), block_hash, at])
    return tamper


def relink(at: int, prev_hash: str):
    """Point a block at another parent consistently: header (rehashed) and the blocks.prev_hash column agree, so only
    the link to the actual previous block can tell (the previous hash is stored nowhere else since migration 4)."""
    def tamper(store: ChainStore) -> None:
        edit_header(at, rehash=True, prev_hash=prev_hash)(store)
        store._connection.execute("UPDATE blocks SET prev_hash = ? WHERE height = ?", [prev_hash, at])
    return tamper


def drop_signatures_below_quorum(height: int):
    def tamper(store: ChainStore) -> None:
        signatures = sorted(store.block(height)["signatures"], key=lambda s: (-s["weight"], s["signer"]))
        total = sum(store.signing_weights(height).values())
        while quorum_reached(sum(s["weight"] for s in signatures), total):
            gone = signatures.pop(0)
            store._connection.execute("DELETE FROM block_signatures WHERE height = ? AND signer = ?", [height, gone["signer"]])
    return tamper


def swap_signature(height: int):
    def tamper(store: ChainStore) -> None:
        first, second = store.block(height)["signatures"][:2]
        store._connection.execute("UPDATE block_signatures SET signature = ? WHERE height = ? AND signer = ?",
                                  [second["signature"], height, first["signer"]])
    return tamper


TAMPERING = {
    "tasks row, epoch 1": (sql("UPDATE tasks SET prompt = prompt || '!' WHERE task_id = ?",
                               lambda s: first_id(s, "tasks", "task_id", 1)), 1, "tasks root"),
    "tasks row, epoch 2": (sql("UPDATE tasks SET max_tokens = max_tokens + 1 WHERE task_id = ?",
                               lambda s: first_id(s, "tasks", "task_id", 2)), 2, "tasks root"),
    "tasks row deleted": (sql("DELETE FROM tasks WHERE task_id = ?", lambda s: first_id(s, "tasks", "task_id", 2)), 2, "tasks root"),
    "tasks row moved": (sql("UPDATE tasks SET epoch = 2 WHERE task_id = ?", lambda s: first_id(s, "tasks", "task_id", 1)), 1, "tasks root"),
    "rejected_tasks reason": (sql("UPDATE rejected_tasks SET reason = 'price_too_low' WHERE submission_id = ?",
                                  lambda s: first_id(s, "rejected_tasks", "submission_id", 1)), 1, "rejections root"),
    "rejected_tasks payload": (sql("UPDATE rejected_tasks SET raw_payload = raw_payload || '\\x00'::BLOB WHERE submission_id = ?",
                                   lambda s: first_id(s, "rejected_tasks", "submission_id", 2)), 2, "rejections root"),
    "transfers row": (sql("UPDATE transfers SET balance_delta = balance_delta - 1 WHERE transfer_id = ?",
                          lambda s: first_id(s, "transfers", "transfer_id", 1)), 1, "transfers root"),
    "transfers row added": (sql("""INSERT INTO transfers BY NAME SELECT 'forged' AS transfer_id, epoch, stage, account,
                                   1000 AS balance_delta, 0 AS escrow_delta, 'gift' AS kind, 'x' AS ref
                                   FROM transfers WHERE epoch = 2 LIMIT 1"""), 2, "transfers root"),
    "account_states, genesis": (sql("UPDATE account_states SET balance = balance + 1 WHERE epoch = 0 AND address = "
                                    "(SELECT min(address) FROM account_states WHERE epoch = 0)"), 0, "accounts root"),
    "account_states, epoch 1": (sql("UPDATE account_states SET escrow = escrow + 5 WHERE epoch = 1 AND address = "
                                    "(SELECT min(address) FROM account_states WHERE epoch = 1)"), 1, "accounts root"),
    "host_states weight": (sql("UPDATE host_states SET weight = weight + 1 WHERE epoch = 1 AND address = "
                               "(SELECT min(address) FROM host_states WHERE epoch = 1)"), 1, "hosts root"),
    "host_states status, genesis": (sql("UPDATE host_states SET status = 'INVALID' WHERE epoch = 0 AND address = "
                                        "(SELECT max(address) FROM host_states WHERE epoch = 0)"), 0, "hosts root"),
    "signatures below quorum": (drop_signatures_below_quorum(1), 1, "not more than 2/3"),
    "signature swapped": (swap_signature(2), 2, "does not verify"),
    "signature weight": (sql("UPDATE block_signatures SET weight = weight + 1 WHERE height = 1 AND signer = "
                             "(SELECT min(signer) FROM block_signatures WHERE height = 1)"), 1, "claims weight"),
    "signature of a stranger": (sql("UPDATE block_signatures SET signer = 'gonka1stranger' WHERE height = 0 AND signer = "
                                    "(SELECT min(signer) FROM block_signatures WHERE height = 0)"), 0, "does not verify"),
    "header timestamp": (edit_header(1, rehash=False, timestamp="2030-01-01T00:00:00+00:00"), 1, "is not the hash of its header"),
    "header timestamp, rehashed": (edit_header(1, rehash=True, timestamp="2030-01-01T00:00:00+00:00"), 1, "does not verify"),
    "header proposer, rehashed": (edit_header(2, rehash=True, proposer="gonka1someoneelse"), 2, "does not verify"),
    "header roots, rehashed": (edit_header(1, rehash=True, roots={"tasks": "00" * 32}), 1, "root in the header"),
    "header prev_hash, rehashed": (edit_header(2, rehash=True, prev_hash="11" * 32), 2, "links to"),
    "header height, rehashed": (edit_header(2, rehash=True, height=7), 2, "height 7"),
    "header chain id, rehashed": (edit_header(0, rehash=True, chain_id="gonka-evil"), 0, "gonka-evil"),
    "block hash": (sql("UPDATE blocks SET hash = ? WHERE height = 1", "ab" * 32), 1, "is not the hash of its header"),
    "epoch parameters": (sql("UPDATE epochs SET params_json = replace(params_json, '\"epoch\": 2', '\"epoch\": 3') "
                             "WHERE epoch = 2"), 2, "parameter hash"),
    "previous hash, header and column": (relink(1, "cd" * 32), 1, "links to"),
    "host key": (sql("UPDATE hosts SET public_key = ? WHERE address = (SELECT min(address) FROM hosts)", "ee" * 32), 0,
                 "registry_hosts root"),
    "host served models": (sql("UPDATE hosts SET models = ['llm-other'] WHERE address = (SELECT min(address) FROM hosts)"), 0,
                           "registry_hosts root"),
    "developer public key": (sql("UPDATE accounts SET public_key = ? WHERE kind = 'developer' AND name = 'dev-ada'", "ee" * 32),
                             0, "registry_accounts root"),
    "account added": (sql("INSERT INTO accounts BY NAME SELECT 'gonka1newcomer' AS address, 'dev-new' AS name, "
                          "'developer' AS kind, ? AS public_key", "ee" * 32), 0, "registry_accounts root"),
    "blocks.prev_hash column": (sql("UPDATE blocks SET prev_hash = ? WHERE height = 2", "99" * 32), 2, "stored previous hash"),
    "header_json not JSON": (sql("UPDATE blocks SET header_json = '{\"height\": 1,' WHERE height = 1"), 1,
                             "the stored header (blocks.header_json) is not valid JSON"),
    "header_json not an object": (sql("UPDATE blocks SET header_json = '[1, 2]' WHERE height = 2"), 2, "a header has exactly"),
    "header with an extra field": (edit_header(1, rehash=False, extra="forged"), 1, "'extra'"),
    "header missing a field": (sql("UPDATE blocks SET header_json = json_object('height', 2) WHERE height = 2"), 2,
                               "the header's fields are ['height']"),
    "params_json not JSON": (sql("UPDATE epochs SET params_json = 'oops' WHERE epoch = 2"), 2,
                             "(epochs.params_json) are not valid JSON"),
}


@pytest.mark.parametrize("tamper, height, message", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_names_exactly_that_block(demo_store, tamper, height, message):
    tamper(demo_store)
    report = verify_chain(demo_store)
    assert report.first_problem is not None, "tampering went unnoticed"
    assert report.first_problem.height == height, str(report.first_problem)
    assert report.blocks_verified == height
    assert message in report.first_problem.message
    assert str(report.first_problem).startswith(f"block {height}: ")


def test_a_missing_block_is_a_gap(demo_store):
    demo_store._connection.execute("UPDATE blocks SET status = 'proposed' WHERE height = 1")
    report = verify_chain(demo_store)
    assert report.first_problem.height == 1 and "gap" in report.first_problem.message


@pytest.mark.parametrize("tamper", ["DELETE FROM block_signatures WHERE height = 1 AND signer = ?",
                                    "UPDATE block_signatures SET height = 4 WHERE height = 1 AND signer = ?"],
                         ids=["dropped", "moved beyond the head"])
def test_a_signature_beyond_the_quorum_is_committed_by_the_next_header(demo_store, tamper):
    """Finality needs > 2/3 of the weight, not every signature; but block 2's header commits to block 1's signer set, so
    dropping or moving a surplus signature is caught at block 2."""
    block = demo_store.block(1)
    total = sum(demo_store.weights(0).values())
    smallest = min(block["signatures"], key=lambda s: (s["weight"], s["signer"]))
    assert quorum_reached(sum(s["weight"] for s in block["signatures"]) - smallest["weight"], total)
    demo_store._connection.execute(tamper, [smallest["signer"]])
    problem = verify_chain(demo_store).first_problem
    assert problem is not None and problem.height == 2
    assert "block 1's stored signatures (block_signatures)" in problem.message and "a signature was dropped" in problem.message


def reseal(store: ChainStore, layout: DataLayout, height: int) -> None:
    """What a proposer holding every host key could do: recompute the roots from the rows and re-sign the header."""
    block = store.block(height)
    header = BlockHeader(**(block["header"] | {"roots": store.epoch_roots(height)}))
    keys = host_keys(store.hosts(), layout)
    signatures = [{"signer": s["signer"], "weight": s["weight"],
                   "signature": keys[s["signer"]].sign(header.chain_id, MessageKind.BLOCK, header.as_dict())}
                  for s in block["signatures"]]
    store._save_block(header.as_dict(), header.hash, signatures, "finalized")


def test_a_resealed_block_with_a_wrong_post_state_is_caught(demo_store, demo_layout):
    demo_store._connection.execute("UPDATE account_states SET balance = balance + 1000 WHERE epoch = 2 AND address = "
                                   "(SELECT min(address) FROM account_states WHERE epoch = 2)")
    reseal(demo_store, demo_layout, 2)
    problem = verify_chain(demo_store).first_problem
    assert problem.height == 2 and "previous state plus the epoch's transfers" in problem.message


def test_a_resealed_block_with_a_forged_transfer_is_caught(demo_store, demo_layout):
    demo_store._connection.execute("UPDATE transfers SET balance_delta = balance_delta + 7 WHERE transfer_id = ?",
                                   [first_id(demo_store, "transfers", "transfer_id", 2)])
    reseal(demo_store, demo_layout, 2)
    problem = verify_chain(demo_store).first_problem
    assert problem.height == 2 and "previous state plus the epoch's transfers" in problem.message


def test_resealing_an_untouched_block_verifies(demo_store, demo_layout):
    reseal(demo_store, demo_layout, 2)
    assert verify_chain(demo_store).first_problem is None


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_verify_chain_ok(demo_layout, capsys):
    assert cli.main(["--data-dir", str(demo_layout.root), "verify-chain"]) == 0
    with ChainStore.open(demo_layout.database, read_only=True) as store:
        head = store.head().hash
    assert capsys.readouterr().out.strip() == f"ok: 4 blocks verified, head 3 {head}"


def test_cli_verify_chain_re_derives_only_new_or_changed_blocks(demo_layout, capsys):
    """The second check remembers the first (data/verified-blocks.json): nothing re-derived; a changed row re-derives
    its block and is reported; --full ignores the memory."""
    args = ["--data-dir", str(demo_layout.root), "verify-chain"]
    assert cli.main(args) == 0 and capsys.readouterr().out.startswith("ok: 4 blocks verified, head 3 ")
    assert demo_layout.verified_blocks.exists()
    assert cli.main(args) == 0
    assert capsys.readouterr().out.startswith("ok: 4 blocks verified (0 re-derived, 4 unchanged since the last check), head 3 ")
    assert cli.main([*args, "--full"]) == 0 and capsys.readouterr().out.startswith("ok: 4 blocks verified, head 3 ")
    with ChainStore.open(demo_layout.database) as store:
        store._connection.execute("UPDATE fee_shares SET amount = amount + 1 WHERE task_id = ?",
                                  [first_id(store, "fee_shares", "task_id", 3)])
    assert cli.main(args) == 1
    assert capsys.readouterr().err.startswith("INCONSISTENT block 3: the fee_shares root in the header is ")


def test_cli_verify_chain_names_the_tampered_block(demo_layout, capsys):
    with ChainStore.open(demo_layout.database) as store:
        store._connection.execute("UPDATE tasks SET prompt = 'x' WHERE task_id = ?", [first_id(store, "tasks", "task_id", 2)])
    assert cli.main(["--data-dir", str(demo_layout.root), "verify-chain"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("INCONSISTENT block 2: the tasks root in the header is ")


@pytest.mark.parametrize("statement, message", [
    ("UPDATE blocks SET header_json = 'not json' WHERE height = 1", "INCONSISTENT block 1: the stored header (blocks.header_json)"),
    ("UPDATE epochs SET params_json = '{' WHERE epoch = 3", "INCONSISTENT block 3: the epoch's recorded parameters"),
])
def test_cli_verify_chain_reports_unreadable_json_without_a_traceback(demo_layout, capsys, statement, message):
    with ChainStore.open(demo_layout.database) as store:
        store._connection.execute(statement)
    assert cli.main(["--data-dir", str(demo_layout.root), "verify-chain"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err


@pytest.mark.slow
def test_gonka_verify_chain_command_exits_non_zero(demo_layout):
    with ChainStore.open(demo_layout.database) as store:
        store._connection.execute("UPDATE host_states SET weight = 9 WHERE epoch = 1")
    done = subprocess.run([sys.executable, "-m", "gonka_pipelines.cli", "--data-dir", str(demo_layout.root), "verify-chain"],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert done.returncode == 1 and "INCONSISTENT block 1: the hosts root" in done.stderr


def test_cli_on_a_missing_chain_is_a_clean_error(tmp_path, capsys):
    assert cli.main(["--data-dir", str(tmp_path / "nothing"), "verify-chain"]) == 2
    assert "no chain here yet" in capsys.readouterr().err


# -- Merkle inclusion proofs of rows ----------------------------------------------------------------


def check_proof(store: ChainStore, proof: dict) -> None:
    commitment = BY_NAME[proof["table"]]
    block = store.block(proof["epoch"])
    assert proof["root"] == block["header"]["roots"][commitment.name] and proof["block_hash"] == block["hash"]
    assert proof["leaf"] == row_leaf(commitment, proof["row"]), "the proof's row is exactly what its leaf hashes"
    steps = tuple(tuple(step) for step in proof["proof"]["steps"])
    rebuilt = MerkleProof(proof["proof"]["index"], proof["proof"]["leaf_count"], steps)
    assert verify_proof(proof["leaf"], rebuilt, block["header"]["roots"][commitment.name])


def test_prove_a_task(demo_store):
    task_id = first_id(demo_store, "tasks", "task_id", 1)
    proof = prove_row(demo_store, "tasks", task_id)
    assert proof["verified"] is True and proof["epoch"] == 1 and proof["commitment"] == "tasks"
    assert proof["row"]["task_id"] == task_id
    assert proof["proof"]["leaf_count"] == demo_store._scalar("SELECT count(*) FROM tasks WHERE epoch = 1")
    check_proof(demo_store, proof)


def test_prove_an_account_latest_and_at_an_epoch(demo_store):
    address = demo_store._scalar("SELECT min(address) FROM accounts WHERE kind = 'developer'")
    latest = prove_row(demo_store, "accounts", address)
    assert latest["verified"] and latest["epoch"] == DEMO_EPOCHS and latest["table"] == "account_states"
    at_one = prove_row(demo_store, "account_states", address, epoch=1)
    assert at_one["verified"] and at_one["epoch"] == 1
    for proof in (latest, at_one):
        check_proof(demo_store, proof)
        assert proof["row"]["balance"] == demo_store._scalar(
            "SELECT balance FROM account_states WHERE epoch = ? AND address = ?", [proof["epoch"], address])


def test_prove_a_rejection_with_its_raw_payload(demo_store):
    submission_id = first_id(demo_store, "rejected_tasks", "submission_id", 2)
    proof = prove_row(demo_store, "rejections", submission_id)
    raw = demo_store._scalar("SELECT raw_payload FROM rejected_tasks WHERE submission_id = ?", [submission_id])
    assert proof["verified"] and proof["row"]["raw_payload"] == bytes(raw).hex()
    check_proof(demo_store, proof)


def test_a_proof_over_a_row_tampered_to_nan_says_what_was_changed(demo_store):
    """A NaN written into a committed float has no leaf, so no proof of its table and epoch can be built: the error
    names the table and epoch instead of an encoder's message alone."""
    verdict = first_id(demo_store, "task_verdicts", "task_id", 1)
    validator = demo_store._scalar("SELECT min(validator) FROM task_verdicts WHERE task_id = ?", [verdict])
    assert prove_row(demo_store, "task_verdicts", f"{verdict}:{validator}")["verified"]
    demo_store._connection.execute("UPDATE task_verdicts SET similarity = 'nan'::DOUBLE WHERE task_id = ?", [verdict])
    with pytest.raises(ChainError, match="a task_verdicts row of epoch 1 has no canonical encoding .*non-finite float"):
        prove_row(demo_store, "task_verdicts", f"{verdict}:{validator}")


@pytest.mark.parametrize("table, statement", [
    ("tasks", "UPDATE tasks SET prompt = prompt || '?' WHERE task_id = ?"),
    # another row of the same epoch: the recomputed root no longer matches the header, so no proof of that epoch holds
    ("tasks", "UPDATE tasks SET escrow = escrow + 1 WHERE task_id = (SELECT max(task_id) FROM tasks WHERE epoch = 1) AND ? IS NOT NULL"),
    # the latest state (the head's epoch) is the one an account proof proves
    ("accounts", f"UPDATE account_states SET balance = balance + 1 WHERE epoch = {DEMO_EPOCHS} AND address = ?"),
], ids=["the row itself", "a sibling row", "an account state"])
def test_a_proof_fails_after_tampering(demo_store, table, statement):
    row_id = (first_id(demo_store, "tasks", "task_id", 1) if table == "tasks"
              else demo_store._scalar("SELECT min(address) FROM accounts WHERE kind = 'developer'"))
    assert prove_row(demo_store, table, row_id)["verified"]
    demo_store._connection.execute(statement, [row_id])
    assert prove_row(demo_store, table, row_id)["verified"] is False


def test_prove_refuses_unknown_tables_rows_and_unfinalized_epochs(demo_store, demo_layout, network):
    with pytest.raises(ChainError, match="unknown table 'blocks'; provable tables: "):
        prove_row(demo_store, "blocks", "1")
    with pytest.raises(ChainError, match="no row 'nope' in tasks of a finalized block"):
        prove_row(demo_store, "tasks", "nope")
    task_id = first_id(demo_store, "tasks", "task_id", 1)
    with pytest.raises(ChainError, match="at epoch 2"):
        prove_row(demo_store, "tasks", task_id, epoch=2)
    submit_demo_workload(demo_store, demo_layout, network, 4)
    assert collect(build_environment(demo_store, demo_layout, 4), demo_store).accepted > 0
    with pytest.raises(ChainError, match="no row .* in tasks of a finalized block"):
        prove_row(demo_store, "tasks", first_id(demo_store, "tasks", "task_id", 4))


def test_cli_prove(demo_layout, capsys):
    with ChainStore.open(demo_layout.database, read_only=True) as store:
        task_id = first_id(store, "tasks", "task_id", 2)
    assert cli.main(["--data-dir", str(demo_layout.root), "prove", "tasks", task_id]) == 0
    proof = json.loads(capsys.readouterr().out)
    assert proof["verified"] is True and proof["id"] == task_id and proof["epoch"] == 2
    with ChainStore.open(demo_layout.database) as store:
        store._connection.execute("UPDATE tasks SET nonce = nonce + 1000 WHERE task_id = ?", [task_id])
    assert cli.main(["--data-dir", str(demo_layout.root), "prove", "tasks", task_id]) == 1
    assert json.loads(capsys.readouterr().out)["verified"] is False


def test_genesis_has_genesis_params_and_names_its_rule_set(genesis_store, genesis):
    with pytest.raises(ChainError, match="epoch 0 is genesis"):
        genesis_store.epoch_params(0)
    assert genesis_store.genesis() == genesis
    assert genesis_store.rules_name(0) == genesis.rules == "gonka-pipelines/1"
    assert genesis_store.block(0)["header"]["params_hash"] == genesis.params_hash


def test_verify_chains_memory_is_per_chain_and_survives_damage(tmp_path):
    from gonka_pipelines.local.verified import load_verified, save_verified

    path = tmp_path / "verified-blocks.json"
    save_verified(path, "chain-a", {0: ("h0", "f0"), 1: ("h1", "f1")})
    assert load_verified(path, "chain-a") == {0: ("h0", "f0"), 1: ("h1", "f1")}
    assert load_verified(path, "chain-b") == {}, "another chain's memory is not used"
    path.write_text('{"chain_id": "chain-a", "blocks": {"0": 7}}')
    assert load_verified(path, "chain-a") == {}, "a damaged file means: re-derive everything"
    assert load_verified(tmp_path / "missing.json", "chain-a") == {}
    assert [p.name for p in tmp_path.iterdir()] == ["verified-blocks.json"], "no temporary file left behind"
