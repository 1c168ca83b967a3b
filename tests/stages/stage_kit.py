"""The stage tests' chain: one epoch prepared stage by stage, so a test runs exactly one stage on a copy.

The stage network (STAGE_HOSTS) has every behaviour and the numbers PROTOCOL.md's rules need to show: a host big enough
that the power cap binds, hosts with full, partial and no collateral (the grace period ends at epoch 2), a fake_hits
host claiming 256 nonces (so validators sample n = 200), a garbled_output executor, a lazy validator, one task slot per
capacity unit (so tasks overflow and expire) and 3 vesting epochs. Epoch 1 is finalized; epoch 2 (STAGE_EPOCH) is run
once per session with one environment, and the chain folder is kept after every stage as a template to copy.

`StageRun.prepare(tmp_path_factory, name)` copies the template left by the stage before `name` and builds the epoch's
environment once, with an OpenChain that opens the database for each use (`ChainOpener`, counting opens) and a compute
that refuses to run while the chain is open (`GuardedCompute`).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.compute.engine import Compute
from gonka_pipelines.local.config import load_network
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.params import GenesisParams, NetworkConfig
from gonka_pipelines.stages.environment import EpochEnvironment, build_environment, holding, quiet
from gonka_pipelines.stages.pipeline import run_stages
from gonka_pipelines.stages.registry import BY_NAME, STAGE_NAMES

from support.chains import create_chain, opened, submit_tasks
from support.config import SMALL_NONCES_PER_CAPACITY, fast_genesis, write_network

STAGE_HOSTS = [
    {"name": "host-alpha", "capacity": 6, "models": ["llm-tiny"], "collateral": 10**6},
    {"name": "host-bravo", "capacity": 2, "models": ["llm-tiny"]},
    {"name": "host-charlie", "capacity": 4, "models": ["llm-tiny"], "collateral": 2},
    {"name": "host-delta", "capacity": 1, "models": ["llm-tiny"], "collateral": 10**6},
    {"name": "host-fake", "capacity": 4, "models": ["llm-tiny"], "behaviour": "fake_hits", "collateral": 10**6},
    {"name": "host-garbled", "capacity": 2, "models": ["llm-tiny"], "behaviour": "garbled_output", "collateral": 10**6},
    {"name": "host-lazy", "capacity": 1, "models": ["llm-tiny"], "behaviour": "lazy_validator", "collateral": 10**6},
]
STAGE_DEVELOPERS = [{"name": "dev-ada", "balance": 10**12}, {"name": "dev-grace", "balance": 10**12}]
STAGE_OVERRIDES = {
    "sprint__nonces_per_capacity": SMALL_NONCES_PER_CAPACITY,  # 64: the fake host (capacity 4) claims 256 nonces
    "sprint__collateral_grace_epochs": 2,  # epoch 1 keeps its hits as weight, epoch 2 is collateral-adjusted
    "tasks__tasks_per_capacity": 1,  # an executor runs at most `capacity` tasks: the rest expire (missed)
    "rewards__vesting_epochs": 3,
}
STAGE_EPOCH = 2
FIRST_TASK_COUNT = 13
"""Tasks per epoch are the first count from here whose draws show every case the stage tests need (_shows_every_case):
any change to the genesis parameters re-draws everything, and a fixed count would then stop showing an overflow."""

EPOCH_TABLES = ("tasks", "rejected_tasks", "submissions", "poc_batches", "poc_verdict_sets",
                "epoch_weights", "seed_commitments", "task_results", "task_verdicts", "task_outcomes", "fee_shares",
                "host_epochs", "rewards", "emissions", "vesting", "transfers", "lineage", "account_states", "host_states")
"""Every table with an `epoch` column: what a stage of the epoch may write."""


def stage_config(directory: Path) -> tuple[GenesisParams, NetworkConfig]:
    genesis = fast_genesis(directory, **STAGE_OVERRIDES)
    return genesis, load_network(write_network(directory, STAGE_HOSTS, STAGE_DEVELOPERS, key_seed="stage-tests"))


# -- opening the chain, and compute that checks it is closed ------------------------------------------------------


class ChainOpener:
    """An OpenChain that opens the database for each use and closes it after, counting the opens."""

    def __init__(self, database: Path):
        self.database, self.opens, self.held = database, 0, False

    @contextmanager
    def __call__(self) -> Iterator[ChainStore]:
        assert not self.held, "a stage opened the chain while it already held it open"
        self.opens += 1
        with ChainStore.open(self.database) as store:
            self.held = True
            try:
                yield store
            finally:
                self.held = False


class GuardedCompute:
    """Delegates to a Compute; every model call asserts that no connection to the chain is held, and is counted."""

    def __init__(self, inner: Compute, opener: ChainOpener):
        self.inner, self.opener, self.calls = inner, opener, Counter()
        self.scored: list[int] = []  # outputs re-run per score call

    def _enter(self, method: str) -> None:
        assert not self.opener.held, f"compute.{method} ran while the stage held the chain open"
        self.calls[method] += 1

    @property
    def sprint_batch_size(self) -> int:
        return self.inner.sprint_batch_size

    def mine(self, *args: Any) -> Any:
        self._enter("mine")
        return self.inner.mine(*args)

    def distances(self, *args: Any) -> Any:
        self._enter("distances")
        return self.inner.distances(*args)

    def generate(self, *args: Any) -> Any:
        self._enter("generate")
        return self.inner.generate(*args)

    @property
    def eos_token(self) -> int:
        return self.inner.eos_token

    @property
    def bit_exact(self) -> bool:
        return self.inner.bit_exact

    def score(self, model: str, version: str, prompts: pa.Array, outputs: pa.Array) -> Any:
        self._enter("score")
        self.scored.append(len(prompts))
        return self.inner.score(model, version, prompts, outputs)

    def train(self, *args: Any) -> Any:
        self._enter("train")
        return self.inner.train(*args)

    def evaluate(self, *args: Any) -> Any:
        self._enter("evaluate")
        return self.inner.evaluate(*args)


# -- rows ---------------------------------------------------------------------------------------------------------


def epoch_snapshot(store: ChainStore, epoch: int) -> dict[str, list[tuple]]:
    """Every row of the epoch (each epoch table, its block and signatures, the epoch's status)."""
    rows = {table: store._query(f"SELECT * FROM {table} WHERE epoch = ? ORDER BY ALL", [epoch]) for table in EPOCH_TABLES}
    rows["blocks"] = store._query("SELECT * FROM blocks WHERE height = ? ORDER BY ALL", [epoch])
    rows["block_signatures"] = store._query("SELECT * FROM block_signatures WHERE height = ? ORDER BY ALL", [epoch])
    rows["epochs"] = store._query("SELECT * FROM epochs WHERE epoch = ?", [epoch])
    return rows


def changed_tables(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> set[str]:
    return {table for table in after if before[table] != after[table]}


# -- the session's templates --------------------------------------------------------------------------------------

_TEMPLATES: dict[str, Path] = {}
BASE = "stage-base"
"""Epoch 1 finalized, epoch 2's tasks in the inbox: the template before the first stage of epoch 2."""


def _shows_every_case(store: ChainStore) -> bool:
    """Epoch STAGE_EPOCH shows what the stage tests need: host-garbled overflows its slots (misses a task) and has a task
    invalidated, every host but host-fake keeps weight after the collateral adjustment, the power cap binds on
    host-alpha, host-lazy earns a reward its claim then forfeits, and the reward split leaves a rounding remainder."""
    minted = store._scalar("SELECT minted FROM emissions WHERE epoch = ?", [STAGE_EPOCH])
    paid = store._query("SELECT weight FROM rewards WHERE epoch = ?", [STAGE_EPOCH])
    total = sum(weight for (weight,) in paid)
    if not total or sum(minted * weight // total for (weight,) in paid) == minted:
        return False
    rows = {name: row for name, *row in store._query(
        """SELECT h.name, w.adjusted_weight, w.weight, e.missed, r.reward, e.invalidated FROM epoch_weights w
           JOIN hosts h USING (address) JOIN host_epochs e USING (epoch, address) JOIN rewards r USING (epoch, address)
           WHERE w.epoch = ?""", [STAGE_EPOCH])}
    garbled = rows["host-garbled"]
    return (garbled[2] >= 1 and garbled[4] >= 1 and rows["host-lazy"][3] > 0 and rows["host-alpha"][1] < rows["host-alpha"][0]
            and all(adjusted > 0 for name, (adjusted, *_) in rows.items() if name != "host-fake"))


def _stage_base(root: Path, config: Path, count: int) -> DataLayout:
    """Epoch 1 finalized with `count` tasks, epoch 2's `count` tasks waiting in the inbox."""
    genesis, network = stage_config(config)
    layout = create_chain(root, genesis, network)
    with opened(layout) as store:
        submit_tasks(store, layout, network, count, tag="e1 ")
        run_stages(build_environment(store, layout, 1), holding(store), quiet)
        submit_tasks(store, layout, network, count, tag="e2 ")
    return layout


def _choose_task_count(base: Path) -> int:
    for count in range(FIRST_TASK_COUNT, FIRST_TASK_COUNT + 40):
        probe = _stage_base(base / f"stage-probe-{count}", base / "stage-config", count)
        with opened(probe) as store:
            run_stages(build_environment(store, probe, STAGE_EPOCH), holding(store), quiet)
            if _shows_every_case(store):
                return count
    raise AssertionError(f"no task count from {FIRST_TASK_COUNT} shows every case the stage tests need")


TASK_COUNT: list[int] = []
"""The chosen tasks per epoch, once the session's templates exist (task_count())."""


def task_count(tmp_path_factory: pytest.TempPathFactory) -> int:
    template(tmp_path_factory, BASE)
    return TASK_COUNT[0]


def _build(base: Path) -> dict[str, Path]:
    root = base / "stage-chain"
    shutil.rmtree(root, ignore_errors=True)
    TASK_COUNT[:] = [_choose_task_count(base)]
    layout = _stage_base(root / BASE, base / "stage-config", TASK_COUNT[0])
    templates = {BASE: layout.root}
    work = DataLayout(root / "work")
    shutil.copytree(layout.root, work.root)
    with opened(work) as store:
        env = build_environment(store, work, STAGE_EPOCH)
    opener = ChainOpener(work.database)
    for name in STAGE_NAMES:
        BY_NAME[name].run(env, opener, quiet)
        templates[name] = shutil.copytree(work.root, root / f"after-{name}")
    return templates


def template(tmp_path_factory: pytest.TempPathFactory, after: str) -> DataLayout:
    """The session's stage chain as left by stage `after` of STAGE_EPOCH (BASE: before the first); read it only."""
    if not _TEMPLATES:
        _TEMPLATES.update(_build(tmp_path_factory.getbasetemp()))
    return DataLayout(_TEMPLATES[after])


@dataclasses.dataclass
class StageRun:
    """A copy of the stage chain ready for one stage: its environment (built once), opener and guarded compute."""

    name: str
    layout: DataLayout
    env: EpochEnvironment
    opener: ChainOpener
    compute: GuardedCompute

    @classmethod
    def prepare(cls, tmp_path_factory: pytest.TempPathFactory, name: str) -> StageRun:
        index = STAGE_NAMES.index(name)
        source = template(tmp_path_factory, STAGE_NAMES[index - 1] if index else BASE)
        layout = DataLayout(shutil.copytree(source.root, tmp_path_factory.mktemp(f"run-{name}") / "chain"))
        return cls.with_environment(name, layout)

    @classmethod
    def with_environment(cls, name: str, layout: DataLayout) -> StageRun:
        opener = ChainOpener(layout.database)
        with opened(layout) as store:
            env = build_environment(store, layout, STAGE_EPOCH)
        compute = GuardedCompute(env.compute, opener)
        return cls(name, layout, dataclasses.replace(env, compute=compute), opener, compute)

    def run(self) -> Any:
        """Run the stage once; it must leave no connection open."""
        result = BY_NAME[self.name].run(self.env, self.opener, quiet)
        assert not self.opener.held
        return result

    def rerun_fresh(self) -> Any:
        """Run the stage again with an environment built anew from the chain (a retried run)."""
        return StageRun.with_environment(self.name, self.layout).run()

    def snapshot(self) -> dict[str, list[tuple]]:
        with opened(self.layout, read_only=True) as store:
            return epoch_snapshot(store, STAGE_EPOCH)

    @contextmanager
    def store(self) -> Iterator[ChainStore]:
        with opened(self.layout, read_only=True) as store:
            yield store


def template_snapshot(tmp_path_factory: pytest.TempPathFactory, after: str) -> dict[str, list[tuple]]:
    """The epoch's rows as the session's template run left them after stage `after` (BASE: before the first)."""
    with opened(template(tmp_path_factory, after), read_only=True) as store:
        return epoch_snapshot(store, STAGE_EPOCH)


def assert_idempotent(tmp_path_factory: pytest.TempPathFactory, name: str) -> StageRun:
    """Run stage `name` on a fresh copy three times (once, again with the same environment, again with a new one):
    the rows are the template run's every time, and the stage changed exactly `STAGE_WRITES[name]`."""
    assert name != "block", "a finalized block cannot be re-run: test_block_stages checks the refusal"
    run = StageRun.prepare(tmp_path_factory, name)
    index = STAGE_NAMES.index(name)
    before = template_snapshot(tmp_path_factory, STAGE_NAMES[index - 1] if index else BASE)
    expected = template_snapshot(tmp_path_factory, name)
    assert run.snapshot() == before
    run.run()
    first = run.snapshot()
    assert changed_tables(before, first) == STAGE_WRITES[name]
    assert first == expected, "a fresh environment and opener reproduce the template's rows exactly"
    run.run()
    assert run.snapshot() == first, "re-running with the same environment replaces its rows with identical ones"
    run.rerun_fresh()
    assert run.snapshot() == first, "a retried run (environment built anew) writes the same rows"
    return run


STAGE_WRITES: dict[str, set[str]] = {
    "epoch_tasks": {"tasks", "rejected_tasks", "submissions", "transfers", "lineage", "epochs"},
    "sprint_batches": {"poc_batches"},
    "sprint_verdicts": {"poc_verdict_sets"},
    "epoch_weights": {"epoch_weights", "lineage"},
    "task_results": {"seed_commitments", "task_results", "transfers"},
    "task_verdicts": {"task_verdicts", "task_outcomes", "fee_shares", "host_epochs"},
    "rewards": {"rewards", "emissions", "vesting", "transfers", "lineage"},
    "block_proposal": {"account_states", "host_states", "blocks", "block_signatures", "epochs"},
    "block": {"blocks", "epochs"},
}
"""The tables each stage writes for its epoch (every other table of the epoch stays as it was)."""
