"""Host compute on a real local Ray cluster (two CPUs, started and stopped by this module): the same blocks as the
local engine, byte for byte, and a worker that dies mid-stage is retried, or fails the stage before it writes."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import pytest
import ray

from gonka_pipelines import cli
from gonka_pipelines.cluster.ray_engine import RayEngine
from gonka_pipelines.defs.launch import dagster_instance
from gonka_pipelines.local.config import ENGINE_ENV, load_compute_settings
from gonka_pipelines.local.failpoints import BUDGET_ENV, FAILPOINT_ENV
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.simulation.workload import submit_demo_workload
from gonka_pipelines.stages.environment import build_environment
from gonka_pipelines.stages.pipeline import run_epoch

from e2e.test_block_hashes_pinned import DEMO_HASHES, SMALL_HASHES, block_hashes
from support.chains import build_demo_chain, build_small_chain, opened

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crash_budget(tmp_path_factory) -> Path:
    """How many more times a worker dies as it starts mining its hosts (the file's count; 0 at first)."""
    path = tmp_path_factory.mktemp("ray") / "crash-budget"
    path.write_text("0")
    return path


@pytest.fixture(scope="module")
def ray_cluster(crash_budget: Path):
    """A local Ray cluster on two CPUs for this module; its workers inherit the crash point (armed by the budget)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAILPOINT_ENV, "ray.mine_hosts")
        patch.setenv(BUDGET_ENV, str(crash_budget))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def on_ray(ray_cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENGINE_ENV, "ray")


def test_demo_epochs_on_ray_give_the_pinned_blocks(on_ray, tmp_path: Path):
    build_demo_chain(tmp_path / "demo", epochs=3)
    assert block_hashes(DataLayout(tmp_path / "demo")) == DEMO_HASHES


def test_the_small_adversarial_chain_on_ray_gives_the_pinned_blocks(on_ray, tmp_path: Path):
    """Every attack of the small network (late, copied, inflated batches, lazy validators and trainers) computes the
    same on Ray workers as in this process."""
    layout, _ = build_small_chain(tmp_path / "small")
    assert block_hashes(layout) == SMALL_HASHES


def test_host_work_runs_in_the_clusters_worker_processes(on_ray, genesis_layout: DataLayout):
    with opened(genesis_layout, read_only=True) as store:
        env = build_environment(store, genesis_layout, 1)
    assert isinstance(env.engine, RayEngine)
    pids = env.engine.worker_pids()
    assert len(pids) == 2 and os.getpid() not in pids  # one actor per CPU of the cluster


def test_a_worker_killed_mid_stage_is_retried_and_the_block_is_unchanged(on_ray, genesis_layout: DataLayout, network,
                                                                         crash_budget: Path):
    crash_budget.write_text("1")
    with opened(genesis_layout) as store:
        submit_demo_workload(store, genesis_layout, network, 1)
        assert run_epoch(store, genesis_layout, 1) == DEMO_HASHES[1]
    assert crash_budget.read_text() == "0"  # the worker did die once


def test_a_worker_that_keeps_dying_fails_the_stage_before_it_writes(on_ray, genesis_layout: DataLayout, network,
                                                                     crash_budget: Path):
    settings = load_compute_settings()
    crash_budget.write_text("1000")
    with opened(genesis_layout) as store:
        submit_demo_workload(store, genesis_layout, network, 1)
        gc.disable()  # the failed pool's actors are killed, not left to the driver's collector
        try:
            with pytest.raises(ray.exceptions.RayActorError):
                run_epoch(store, genesis_layout, 1)
            assert _cpus_freed_within(30.0)
        finally:
            gc.enable()
        assert int(crash_budget.read_text()) < 1000 - settings.ray.max_retries
        assert store.head().height == 0
        assert store._scalar("SELECT count(*) FROM poc_batches") == 0
        crash_budget.write_text("0")
        assert run_epoch(store, genesis_layout, 1) == DEMO_HASHES[1]  # a re-run, on fresh workers


def _cpus_freed_within(seconds: float) -> bool:
    """Whether every CPU of the cluster is free again before `seconds` pass (a killed actor's release is asynchronous)."""
    deadline = time.monotonic() + seconds
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_gonka_run_with_engine_ray_runs_the_epoch_through_dagster_on_the_cluster(ray_cluster, genesis_layout: DataLayout,
                                                                                   network, capsys):
    with opened(genesis_layout) as store:
        submit_demo_workload(store, genesis_layout, network, 1)
    assert cli.main(["--data-dir", str(genesis_layout.root), "run", "--engine", "ray", "-q"]) == 0
    assert "epoch 1: run" in capsys.readouterr().out
    assert block_hashes(genesis_layout) == DEMO_HASHES[:2]
    with dagster_instance(genesis_layout) as instance:
        (run,) = instance.get_runs()
        messages = [entry.user_message for entry in instance.all_logs(run.run_id)]
    assert any(message.startswith("compute: engine ray") for message in messages)
