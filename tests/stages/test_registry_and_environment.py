"""The stage registry (one ordered list of stages) and the epoch environment (built once per run, never re-read)."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from gonka_pipelines.chain.core import EpochOrderError, FinalizedEpochError
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import MessageKind, sha256_hex
from gonka_pipelines.protocol.sprint import calibrate_r_target
from gonka_pipelines.stages import environment, registry
from gonka_pipelines.stages.environment import build_environment, epoch_parameters, quiet, secret_seed
from gonka_pipelines.stages.pipeline import run_epoch, run_stages
from gonka_pipelines.stages.registry import BY_NAME, STAGE_NAMES, STAGES, stages_through

from stage_kit import BASE, STAGE_EPOCH, ChainOpener, StageRun, epoch_snapshot, template
from support.chains import opened
from support.chains import run_stages as run_stages_on

ORDER = ("epoch_tasks", "sprint_batches", "sprint_verdicts", "epoch_weights", "task_results", "task_verdicts", "rewards",
         "block_proposal", "block")


@pytest.fixture
def base(tmp_path_factory, tmp_path) -> DataLayout:
    """A copy of the stage chain: epoch 1 finalized, epoch 2's tasks waiting in the inbox."""
    return DataLayout(shutil.copytree(template(tmp_path_factory, BASE).root, tmp_path / "chain"))


# -- registry --------------------------------------------------------------------------------------------------------


def test_stage_names_are_unique_and_in_epoch_order():
    assert STAGE_NAMES == ORDER
    assert len(set(STAGE_NAMES)) == len(STAGES)
    assert BY_NAME == {stage.name: stage for stage in STAGES}
    assert all(stage.description and stage.group for stage in STAGES)


def test_only_the_stages_that_run_models_are_marked_computes():
    assert {s.name for s in STAGES if s.computes} == {"sprint_batches", "sprint_verdicts", "task_results", "task_verdicts"}


@pytest.mark.parametrize("last", ORDER)
def test_run_stages_runs_exactly_the_prefix_through_a_stage(monkeypatch, last):
    calls = []

    def recorder(name):
        def run(env, open_chain, log):
            calls.append((name, env, open_chain, log))
            return f"result of {name}"
        return run

    monkeypatch.setattr(registry, "STAGES", tuple(dataclasses.replace(s, run=recorder(s.name)) for s in STAGES))
    env, open_chain = object(), object()
    results = run_stages(env, open_chain, quiet, through=last)
    prefix = ORDER[: ORDER.index(last) + 1]
    assert [c[0] for c in calls] == list(prefix)
    assert all(c[1] is env and c[2] is open_chain and c[3] is quiet for c in calls), "every stage gets the one environment"
    assert results == {name: f"result of {name}" for name in prefix}
    assert list(results) == list(prefix)


def test_run_stages_through_a_stage_leaves_the_later_ones_unrun(base):
    with opened(base) as store:
        results = run_stages_on(store, base, STAGE_EPOCH, through="epoch_weights")
        assert list(results) == list(ORDER[:4])
        counts = {t: store._scalar(f"SELECT count(*) FROM {t} WHERE epoch = ?", [STAGE_EPOCH])
                  for t in ("tasks", "poc_batches", "poc_verdicts", "epoch_weights", "task_results", "task_verdicts", "rewards")}
        assert all(counts[t] > 0 for t in ("tasks", "poc_batches", "poc_verdicts", "epoch_weights")), counts
        assert counts["task_results"] == counts["task_verdicts"] == counts["rewards"] == 0
        assert store.epoch_status(STAGE_EPOCH) == "open" and store.block(STAGE_EPOCH) is None


def test_an_unknown_stage_is_refused_with_the_list_of_stages(base):
    message = "unknown stage 'finalize'; stages: " + ", ".join(ORDER)
    with pytest.raises(ValueError, match=f"^{message}$"):
        stages_through("finalize")
    with opened(base) as store:
        with pytest.raises(ValueError, match=f"^{message}$"):
            run_stages_on(store, base, STAGE_EPOCH, through="finalize")
        assert store.epoch_status(STAGE_EPOCH) is None, "nothing ran: the epoch was not even opened"


# -- environment -----------------------------------------------------------------------------------------------------


def test_build_environment_refuses_a_finalized_epoch_naming_the_epoch_to_launch(base):
    with opened(base) as store:
        with pytest.raises(FinalizedEpochError, match=r"epoch 1 is finalized \(block 1\).*Launch the next epoch instead: partition 2"):
            build_environment(store, base, 1)
        with pytest.raises(FinalizedEpochError, match="epoch 0 is finalized"):
            build_environment(store, base, 0)


def test_build_environment_refuses_an_epoch_out_of_order_naming_the_epoch_to_launch(base):
    with opened(base) as store:
        with pytest.raises(EpochOrderError, match=r"epoch 3 cannot run now: the head is block 1\. Launch epoch 2 first"):
            build_environment(store, base, 3)


def test_the_environment_holds_the_epochs_inputs(base):
    with opened(base) as store:
        env = build_environment(store, base, STAGE_EPOCH)
        head, hosts, genesis, weights = store.head(), store.hosts(), store.genesis(), store.weights(STAGE_EPOCH - 1)
    assert (env.epoch, env.chain_id, env.prev_hash, env.layout) == (STAGE_EPOCH, genesis.chain_id, head.hash, base)
    assert env.params == epoch_parameters(genesis, STAGE_EPOCH)
    assert env.params.r_target == calibrate_r_target(load_profile(genesis.sprint.model).vocab, genesis.sprint.wanted_hit_rate)
    assert env.hosts == tuple(hosts) and [h.address for h in env.hosts] == sorted(h.address for h in hosts)
    assert env.host == {h.address: h for h in hosts}
    assert env.weights == weights and sum(weights.values()) > len(hosts), "epoch 1's sprint weights, not genesis' 1 each"
    assert {a: k.public_key for a, k in env.keys.items()} == {h.address: h.public_key for h in hosts}
    assert env.compute.prev_hash == head.hash and env.compute.sprint_model == genesis.sprint.model


def test_secret_seeds_are_each_hosts_signature_hash_over_epoch_and_previous_hash(base):
    with opened(base) as store:
        env = build_environment(store, base, STAGE_EPOCH)
    assert env.secret_seeds == {h.address: secret_seed(env.keys[h.address], env.chain_id, STAGE_EPOCH, env.prev_hash) for h in env.hosts}
    for host in env.hosts:
        signature = env.keys[host.address].sign(env.chain_id, MessageKind.SEED_COMMIT, {"epoch": STAGE_EPOCH, "secret_for": env.prev_hash})
        assert env.secret_seeds[host.address] == sha256_hex(bytes.fromhex(signature))
        assert env.secret_seeds[host.address] != secret_seed(env.keys[host.address], env.chain_id, STAGE_EPOCH + 1, env.prev_hash)
    assert len(set(env.secret_seeds.values())) == len(env.hosts)
    assert env.secret_seeds is env.secret_seeds, "derived once"


def test_stages_never_re_read_the_environment(base, tmp_path, monkeypatch):
    """One environment, then the chain's genesis, host registry, weights and every key file are made unreadable: the
    stages still run the epoch to the very block run_epoch finalizes on a copy of the same chain."""
    twin = DataLayout(shutil.copytree(base.root, tmp_path / "twin"))
    with opened(twin) as store:
        expected = run_epoch(store, twin, STAGE_EPOCH)
        expected_rows = epoch_snapshot(store, STAGE_EPOCH)

    with opened(base) as store:
        env = build_environment(store, base, STAGE_EPOCH)
    shutil.rmtree(base.keys)

    def refuse(*_args, **_kwargs):
        raise AssertionError("a stage re-read what the environment holds")

    for name in ("genesis", "hosts", "weights"):
        monkeypatch.setattr(ChainStore, name, refuse)
    monkeypatch.setattr(environment, "build_environment", refuse)
    monkeypatch.setattr(environment, "host_keys", refuse)
    monkeypatch.setattr(environment, "epoch_parameters", refuse)
    results = run_stages(env, ChainOpener(base.database), quiet)
    monkeypatch.undo()

    assert results["block"] == expected
    with opened(base) as store:
        assert store.head().hash == expected
        assert epoch_snapshot(store, STAGE_EPOCH) == expected_rows
    with opened(base) as store, pytest.raises(FileNotFoundError, match="key file of host"):
        build_environment(store, base, STAGE_EPOCH + 1)  # what a re-read would have met: the keys are gone


def test_the_stage_tests_compute_guard_catches_compute_with_the_chain_open(tmp_path_factory):
    """The stage tests' check that a stage holds no connection while models run is not vacuous."""
    run = StageRun.prepare(tmp_path_factory, "sprint_batches")
    host = run.env.hosts[0]
    with run.opener(), pytest.raises(AssertionError, match="compute.mine ran while the stage held the chain open"):
        run.compute.mine(host.public_key, 0, 1, run.env.params.r_target)
    assert run.compute.mine(host.public_key, 0, 1, run.env.params.r_target) is not None
    assert (run.opener.opens, dict(run.compute.calls)) == (1, {"mine": 1})


def test_bookkeeping_stages_run_with_the_cyclic_collector_paused_and_give_it_back():
    """Stages that run no model pause Python's cyclic GC while they build their rows (it is on again after, even when the
    stage fails, and stays off if it was off); stages that run models leave it alone."""
    import gc

    from gonka_pipelines.stages.registry import STAGES, cyclic_gc_paused

    seen = []

    def stage(env, open_chain, log):
        seen.append(gc.isenabled())
        if env == "fail":
            raise RuntimeError("stage failed")
        return "done"

    paused = cyclic_gc_paused(stage)
    assert gc.isenabled() and paused(None, None, None) == "done" and gc.isenabled()
    with pytest.raises(RuntimeError):
        paused("fail", None, None)
    assert gc.isenabled() and seen == [False, False]
    gc.disable()
    try:
        paused(None, None, None)
        assert not gc.isenabled(), "an owner that turned it off keeps it off"
    finally:
        gc.enable()
    assert {s.name for s in STAGES if s.run.__code__.co_name == "paused"} == {s.name for s in STAGES if not s.computes}


def test_model_stages_keep_the_cyclic_collector_on_a_frozen_heap_and_give_it_back():
    """Stages that run models keep the cyclic GC on, with what existed before them frozen and young collections every
    50,000 allocations; thresholds and the heap come back after (even when the stage fails), and an owner's freeze stays."""
    import gc

    from gonka_pipelines.stages.registry import STAGES, YOUNG_COLLECTION_EVERY, cyclic_gc_on_a_frozen_heap

    seen = []

    def stage(env, open_chain, log):
        seen.append((gc.isenabled(), gc.get_freeze_count() > 0, gc.get_threshold()[0]))
        if env == "fail":
            raise RuntimeError("stage failed")
        return "done"

    frozen, thresholds = cyclic_gc_on_a_frozen_heap(stage), gc.get_threshold()
    assert gc.get_freeze_count() == 0 and frozen(None, None, None) == "done"
    with pytest.raises(RuntimeError):
        frozen("fail", None, None)
    assert seen == [(True, True, YOUNG_COLLECTION_EVERY)] * 2
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen(None, None, None)
        assert gc.get_freeze_count() > 0, "an owner's freeze stays"
    finally:
        gc.unfreeze()
    assert {s.name for s in STAGES if s.run.__code__.co_name == "frozen"} == {s.name for s in STAGES if s.computes}
