"""Determinism of the epoch's work: same inputs give the same chain; a validator reproduces a host's distances bit
for bit; re-running a stage of an unfinalized epoch replaces its rows with identical ones."""

from __future__ import annotations

import numpy as np
import pytest

from gonka_pipelines.chain.invariants import check_epoch_supply
from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.stages.environment import (
    EpochEnvironment,
    build_environment,
    epoch_parameters,
    holding,
    host_keys,
    quiet,
)
from gonka_pipelines.stages.rewards import run_rewards
from gonka_pipelines.stages.sprint import (
    run_epoch_weights,
    run_sprint,
    run_sprint_validation,
)

from support.chains import build_small_chain, copy_chain, opened, run_stages, small_template, submit_tasks
from support.config import SMALL_EPOCHS, SMALL_TASKS

EPOCHS = SMALL_EPOCHS
TASKS = SMALL_TASKS

pytestmark = pytest.mark.slow  # five small epochs of real compute: ~15 s on an idle 2-core CPU


@pytest.fixture(scope="module")
def twin_chains(tmp_path_factory):
    """The session's small chain and a second one built from scratch the same way."""
    return small_template(tmp_path_factory), build_small_chain(tmp_path_factory.mktemp("twin") / "b")


def table(store, sql):
    return store._query(sql)


def finalized_environment(store, layout, epoch) -> EpochEnvironment:
    """The environment a finalized epoch ran under, rebuilt from what the chain recorded for it (build_environment
    only builds the head's successor)."""
    hosts = store.hosts()
    params, prev_hash = store.epoch_params(epoch), store.prev_hash(epoch)
    assert params == epoch_parameters(store.genesis(), epoch)
    return EpochEnvironment(epoch=epoch, chain_id=store.chain_id, prev_hash=prev_hash, params=params, layout=layout,
                            hosts=tuple(hosts), keys=host_keys(hosts, layout), weights=store.weights(epoch - 1),
                            compute=TorchCompute(params.sprint.model, prev_hash), served=store.served_versions(epoch - 1))


def test_two_fresh_chains_give_identical_weights_and_blocks(twin_chains):
    (a, _), (b, _) = twin_chains
    queries = [
        "SELECT * FROM epoch_weights ORDER BY epoch, address",
        "SELECT height, hash, prev_hash, header_json FROM blocks ORDER BY height",
        "SELECT epoch, host, sequence, nonces, distances, status, reason FROM poc_batches ORDER BY ALL",
        "SELECT * FROM rewards ORDER BY epoch, address",
        "SELECT * FROM emissions ORDER BY epoch",
        "SELECT epoch, status, params_hash, params_json FROM epochs ORDER BY epoch",
    ]
    with opened(a, read_only=True) as sa, opened(b, read_only=True) as sb:
        assert sa.head().height == sb.head().height == EPOCHS
        for sql in queries:
            rows = table(sa, sql)
            assert rows, sql
            assert rows == table(sb, sql), sql
        weights = table(sa, "SELECT epoch, weight FROM epoch_weights")
        assert any(w > 0 for _, w in weights)
        # each epoch's sprint is seeded by the previous block hash (the epochs table no longer copies it)
        hashes = dict(table(sa, "SELECT height, hash FROM blocks"))
        assert {e: sa.prev_hash(e) for e in range(1, EPOCHS + 1)} == {e: hashes[e - 1] for e in range(1, EPOCHS + 1)}
        assert dict(table(sa, "SELECT height, prev_hash FROM blocks WHERE height > 0")) == {e: hashes[e - 1] for e in range(1, EPOCHS + 1)}


def test_sprint_weights_follow_the_block_hash_only(twin_chains):
    """Recomputing an epoch's weights from the stored rows gives the stored weights (nothing else feeds them)."""
    (a, _), _ = twin_chains
    with opened(a, read_only=True) as store:
        for epoch in range(1, EPOCHS + 1):
            stored = store._records("SELECT * FROM epoch_weights WHERE epoch = ? ORDER BY address", [epoch])
            env = finalized_environment(store, a, epoch)
            assert sorted(env.rules.epoch_weights(store.weight_inputs(epoch), env.prev_hash, env.weights), key=lambda r: r["address"]) == stored


@pytest.mark.parametrize("epoch", range(1, EPOCHS + 1))
def test_a_validator_reproduces_accepted_distances_bit_for_bit(twin_chains, epoch):
    (a, _), _ = twin_chains
    with opened(a, read_only=True) as store:
        params, seed = store.epoch_params(epoch), store.prev_hash(epoch)
        batches = store._records(
            """SELECT b.nonces, b.distances, h.public_key, h.behaviour FROM poc_batches b JOIN hosts h ON h.address = b.host
               WHERE b.epoch = ? AND b.status = 'accepted' ORDER BY b.host, b.sequence""", [epoch])
    honest = [b for b in batches if b["behaviour"] == "honest"]
    assert honest
    compute = TorchCompute(params.sprint.model, seed)  # a fresh validator's view: the model rebuilt from the hash
    for batch in honest:
        recomputed = np.asarray(compute.distances(batch["public_key"], batch["nonces"]), dtype=np.float64)
        stored = np.asarray(batch["distances"], dtype=np.float64)
        assert recomputed.shape == stored.shape
        assert recomputed.tobytes() == stored.tobytes(), "distances must reproduce bit for bit"
        assert (stored < params.r_target).all(), "a batch holds hits only"
    # the same nonces one at a time and shuffled give the same bits (a validator's sample is any subset, any order)
    batch = honest[0]
    singles = [float(compute.distances(batch["public_key"], [n])[0]) for n in batch["nonces"][:4]]
    assert np.asarray(singles, dtype=np.float64).tobytes() == np.asarray(batch["distances"][:4], dtype=np.float64).tobytes()
    reversed_ = np.asarray(compute.distances(batch["public_key"], batch["nonces"][::-1]), dtype=np.float64)
    assert reversed_[::-1].tobytes() == np.asarray(batch["distances"], dtype=np.float64).tobytes()
    # the fake host's claimed distances do not reproduce
    fake = [b for b in batches if b["behaviour"] == "fake_hits"]
    assert fake
    recomputed = np.asarray(compute.distances(fake[0]["public_key"], fake[0]["nonces"][:50]), dtype=np.float64)
    assert (recomputed != np.asarray(fake[0]["distances"][:50])).all()


# -- re-running stages of an unfinalized epoch --------------------------------------------------------------------

EPOCH_TABLES = ("tasks", "rejected_tasks", "submissions", "poc_batches", "poc_verdicts", "epoch_weights", "seed_commitments",
                "task_results", "task_verdicts", "task_outcomes", "fee_shares", "host_epochs", "rewards", "emissions",
                "vesting", "transfers", "lineage")


def snapshot(store, epoch):
    return {t: store._query(f"SELECT * FROM {t} WHERE epoch = ? ORDER BY ALL", [epoch]) for t in EPOCH_TABLES}


@pytest.fixture
def open_epoch(twin_chains, tmp_path):
    """A copy of a finalized chain with its next epoch run through rewards (not proposed): (layout, epoch, snapshot)."""
    (a, network), _ = twin_chains
    layout = copy_chain(a.root, tmp_path / "chain")
    epoch = EPOCHS + 1
    with opened(layout) as store:
        submit_tasks(store, layout, network, TASKS)
        run_stages(store, layout, epoch, through="rewards")
        assert store.epoch_status(epoch) == "open"
        before = snapshot(store, epoch)
    assert all(before[t] for t in ("tasks", "poc_batches", "poc_verdicts", "epoch_weights", "task_results", "rewards",
                                   "emissions", "transfers", "lineage")), "every table of the epoch has rows to compare"
    return layout, epoch, before


def test_rerunning_rewards_is_idempotent(open_epoch):
    layout, epoch, before = open_epoch
    with opened(layout) as store:
        env = build_environment(store, layout, epoch)
        hosts, emission = run_rewards(env, holding(store), quiet)
        assert snapshot(store, epoch) == before
        hosts_again, emission_again = run_rewards(env, holding(store), quiet)
        assert snapshot(store, epoch) == before
        assert emission == emission_again and hosts.equals(hosts_again)
        assert check_epoch_supply(store, epoch) == check_epoch_supply(store, epoch - 1) + emission["minted"] - emission["burned"]


def test_rerunning_the_sprint_is_idempotent(open_epoch):
    layout, epoch, before = open_epoch
    with opened(layout) as store:
        env, open_chain = build_environment(store, layout, epoch), holding(store)
        run_sprint(env, open_chain, quiet)
        assert snapshot(store, epoch) == before, "the same batches, ids and signatures; nothing downstream touched"
        run_sprint_validation(env, open_chain, quiet)
        run_epoch_weights(env, open_chain, quiet)
        assert snapshot(store, epoch) == before


def test_rerunning_every_stage_then_finalizing_gives_the_same_block(open_epoch, twin_chains, tmp_path):
    """Run the epoch's stages twice over (a retry after a crash) and once cleanly: the same block hash."""
    layout, epoch, before = open_epoch
    (a, network), _ = twin_chains
    clean = copy_chain(a.root, tmp_path / "clean")
    with opened(clean) as store:
        submit_tasks(store, clean, network, TASKS)
        clean_hash = run_stages(store, clean, epoch)["block"]
    with opened(layout) as store:
        # collect again: the inbox still holds the epoch's submissions (archived only at finalize)
        retried = run_stages(store, layout, epoch)["block"]
        after = snapshot(store, epoch)
    assert retried == clean_hash
    assert {t: rows for t, rows in after.items()} == before
