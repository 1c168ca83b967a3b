"""A run killed at any asset boundary (as `kill -9` or a power cut would) never blocks the next: the next `gonka run`
marks it failed, frees its pool slot and epoch claim, and re-runs the epoch to the block an uninterrupted run gives.
`gonka run` under SIGTERM stops without leaving anything behind that blocks or changes the next run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from gonka_pipelines.defs.runs import PROCESS_TAG
from gonka_pipelines.local.failpoints import CRASH_EXIT_CODE, FAILPOINT_ENV
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.stages.pipeline import run_epoch
from gonka_pipelines.stages.registry import STAGE_NAMES

from support.chains import opened

pytestmark = pytest.mark.slow
GONKA = str(Path(sys.executable).parent / "gonka")


def gonka(root: Path, *args: str, failpoint: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAILPOINT_ENV} | {"GONKA_DATA_DIR": str(root), "DAGSTER_HOME": str(root / "dh")}
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    return subprocess.run([GONKA, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, str]:
    """A genesis chain with three submitted tasks (the CLI's own), and the block 1 an uninterrupted run makes of it."""
    root = tmp_path_factory.mktemp("killed") / "template"
    assert gonka(root, "init").returncode == 0
    for prompt in ("one", "two", "three"):
        assert gonka(root, "submit", "--developer", "dev-ada", "--prompt", prompt).returncode == 0
    reference = root.parent / "reference"
    shutil.copytree(root, reference)
    layout = DataLayout(reference)
    with opened(layout) as store:
        return root, run_epoch(store, layout, 1)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_a_run_killed_after_any_asset_never_blocks_the_next(prepared, tmp_path, stage):
    template, expected = prepared
    root = tmp_path / "chain"
    shutil.copytree(template, root)
    killed = gonka(root, "run", failpoint=f"asset.{stage}.done")
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    with dg.DagsterInstance.from_config(str(root / "dh")) as instance:
        (dead,) = instance.get_runs()
        assert dead.status == dg.DagsterRunStatus.STARTED and PROCESS_TAG in dead.tags, "the kill left the run 'running'"
    started = time.monotonic()
    with opened(DataLayout(root), read_only=True) as store:
        head = store.head().height
    if head == 0:  # killed before the block was final: the next run takes epoch 1 up again
        rerun = gonka(root, "run", timeout=90)
        assert rerun.returncode == 0 and "epoch 1: run" in rerun.stdout, rerun.stdout + rerun.stderr[-2000:]
        assert time.monotonic() - started < 60
    with opened(DataLayout(root), read_only=True) as store:
        assert store.head().height == 1 and store.block_hash(1) == expected
    with dg.DagsterInstance.from_config(str(root / "dh")) as instance:
        statuses = {run.run_id: run.status for run in instance.get_runs()}
        assert statuses[dead.run_id] == (dg.DagsterRunStatus.STARTED if head == 1 else dg.DagsterRunStatus.FAILURE)


def test_sigterm_stops_a_run_and_the_next_one_makes_the_same_block(prepared, tmp_path):
    template, expected = prepared
    root = tmp_path / "chain"
    shutil.copytree(template, root)
    env = os.environ | {"GONKA_DATA_DIR": str(root), "DAGSTER_HOME": str(root / "dh")}
    process = subprocess.Popen([GONKA, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((root / "dh").rglob("*.db")) and time.monotonic() < deadline:  # the run has been created
        time.sleep(0.2)
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    process.communicate(timeout=60)
    assert time.monotonic() - sent < 30, "gonka run did not stop on SIGTERM"
    with opened(DataLayout(root), read_only=True) as store:
        head = store.head().height
    if head == 0:
        rerun = gonka(root, "run", timeout=90)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr[-2000:]
    with opened(DataLayout(root), read_only=True) as store:
        assert store.head().height == 1 and store.block_hash(1) == expected
