"""Chains for tests: built from config, run stage by stage, and cached once per session as templates to copy.

The session builds each template once (genesis; the `make demo` chain; the small adversarial chain; epoch 1 proposed
and finalized); a test that writes copies one into its own tmp_path first.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.config import NETWORK_FILE, changed_params, load_genesis, load_network
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.params import GenesisParams, NetworkConfig
from gonka_pipelines.simulation.workload import submit_demo_workload, submit_tasks
from gonka_pipelines.stages.environment import build_environment, holding, quiet
from gonka_pipelines.stages.genesis import init_chain
from gonka_pipelines.stages.pipeline import run_epoch
from gonka_pipelines.stages.pipeline import run_stages as pipeline_stages

from support.config import SMALL_EPOCHS, SMALL_TASKS, small_config


def create_chain(root: Path, genesis: GenesisParams, network: NetworkConfig) -> DataLayout:
    """A genesis chain (block 0 final) under root."""
    layout = DataLayout(Path(root))
    with ChainStore.open(layout.database) as store:
        init_chain(store, layout, genesis, network)
    return layout


@contextmanager
def opened(layout: DataLayout, read_only: bool = False) -> Iterator[ChainStore]:
    with ChainStore.open(layout.database, read_only=read_only) as store:
        yield store


def run_stages(store: ChainStore, layout: DataLayout, epoch: int, through: str = "block", log=quiet) -> dict[str, Any]:
    """Build the epoch's environment and run its stages (the registry's order) up to and including `through`;
    returns each stage's result by name."""
    return pipeline_stages(build_environment(store, layout, epoch), holding(store), log, through)


def names_by_address(store: ChainStore) -> dict[str, str]:
    return store.account_names()


_TEMPLATES: dict[str, Path] = {}


def cached_chain(key: str, base: Path, build: Callable[[Path], None]) -> Path:
    """Build a chain folder once per session (build(root) fills root); later calls return the same folder.

    Callers must copy it (copy_chain) before writing; read-only use of the template itself is fine.
    """
    if key not in _TEMPLATES:
        root = Path(base) / f"template-{key}"
        shutil.rmtree(root, ignore_errors=True)
        build(root)
        _TEMPLATES[key] = root
    return _TEMPLATES[key]


def copy_chain(template: Path, destination: Path) -> DataLayout:
    shutil.copytree(template, destination)
    return DataLayout(Path(destination))


def build_demo_chain(root: Path, epochs: int = 3, settings: tuple[str, ...] = ()) -> None:
    """Exactly the chain `make demo` builds: the shipped genesis and demo network, `epochs` epochs of the demo
    workload (via run_epoch), so what these tests pin is what a user sees; `settings` (section.key=value) change
    the genesis params first."""
    genesis = changed_params(load_genesis(), settings)
    network = load_network(NETWORK_FILE)
    layout = create_chain(root, genesis, network)
    with opened(layout) as store:
        for epoch in range(1, epochs + 1):
            submit_demo_workload(store, layout, network, epoch)
            run_epoch(store, layout, epoch)


DEMO_EPOCHS = 3


def demo_template(tmp_path_factory) -> DataLayout:
    """The session's demo chain after DEMO_EPOCHS epochs (read it; copy it before writing)."""
    base = tmp_path_factory.getbasetemp()
    return DataLayout(cached_chain("demo", base, lambda root: build_demo_chain(root, DEMO_EPOCHS)))


COLUMNS_SETTINGS = ("tasks.record_encoding=columns",)
"""The demo chain's params with its results' and verdicts' record leaves in the columns encoding."""


def demo_columns_template(tmp_path_factory) -> DataLayout:
    """The demo chain with COLUMNS_SETTINGS, built once per session (read it; copy it before writing)."""
    base = tmp_path_factory.getbasetemp()
    return DataLayout(cached_chain("demo-columns", base, lambda root: build_demo_chain(root, DEMO_EPOCHS, COLUMNS_SETTINGS)))


def build_small_chain(root: Path, epochs: int = SMALL_EPOCHS, tasks: int = SMALL_TASKS) -> tuple[DataLayout, NetworkConfig]:
    """A fresh chain of the small network, `epochs` epochs run stage by stage with `tasks` tasks each."""
    root = Path(root)
    genesis, network = small_config(root.parent / f"{root.name}-config")
    layout = create_chain(root, genesis, network)
    with opened(layout) as store:
        for epoch in range(1, epochs + 1):
            submit_tasks(store, layout, network, tasks)
            run_stages(store, layout, epoch)
    return layout, network


def small_template(tmp_path_factory) -> tuple[DataLayout, NetworkConfig]:
    """The session's small adversarial chain after SMALL_EPOCHS epochs (read it; copy it before writing)."""
    root = cached_chain("small", tmp_path_factory.getbasetemp(), lambda r: build_small_chain(r))
    return DataLayout(root), small_config(root.parent / f"{root.name}-config")[1]


def training_chain(root: Path, hosts: list) -> tuple[DataLayout, Any, str, list[str]]:
    """A genesis chain of `hosts` (small_network's form) ready for training orders: its layout, a task submitter, the
    served model's genesis version and the training shards' hashes (sorted)."""
    from support.config import fast_genesis, small_network
    from support.submitter import TaskSubmitter

    genesis = fast_genesis(Path(root) / "config")
    network = small_network(Path(root) / "config", hosts)
    layout = create_chain(Path(root) / "chain", genesis, network)
    with opened(layout, read_only=True) as store:
        (version,) = store.model_versions()
        shards = sorted(store.training_shards())
    return layout, TaskSubmitter(layout, genesis, network), version, shards


def check_every_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule set's validation draw, plus, for any task nobody drew, the first pool member after its executor: for
    tests of what validation finds rather than who is drawn (at low traffic a task expects one validation and gets none
    with probability about 1/e, and which tasks those are moves with every change to the chain's hashes)."""
    from gonka_pipelines.protocol.rules import GonkaPipelinesV1

    draw = GonkaPipelinesV1.select_validations

    def at_least_one(rules, executors, pool, traffic):
        tasks, validators = draw(rules, executors, pool, traffic)
        drawn = set(tasks.tolist())
        extra = [(t, (list(pool.ids).index(executor) + 1) % len(pool.ids))
                 for t, executor in enumerate(executors.to_list()) if t not in drawn]
        pairs = sorted([*zip(tasks.tolist(), validators.tolist()), *extra])
        return np.array([t for t, _ in pairs], dtype=np.int64), np.array([v for _, v in pairs], dtype=np.int64)

    monkeypatch.setattr(GonkaPipelinesV1, "select_validations", at_least_one)
