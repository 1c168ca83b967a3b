"""Shared fixtures: a data folder, the shipped genesis and network, initialized chains, signed submissions, epochs.

Chains are built once per session as templates (genesis; genesis plus two epochs of the demo workload) and
copied for each test that asks for one, so every test gets its own chain (database, key files, inbox) in its
own tmp_path at the price of a file copy instead of an epoch run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.config import load_genesis, load_network
from gonka_pipelines.local.inbox import write_submission
from gonka_pipelines.local.keys import load_key
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import KeyPair
from gonka_pipelines.protocol.params import GenesisParams, NetworkConfig
from gonka_pipelines.simulation.client import sign_task

DEMO_EPOCHS = 2


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may touch the repository's data/ or a developer's Dagster home, or inherit a crash point."""
    monkeypatch.setenv("GONKA_DATA_DIR", str(tmp_path / "default-data-dir"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("GONKA_FAILPOINT", raising=False)


@pytest.fixture(scope="session")
def genesis() -> GenesisParams:
    """The default profile of the shipped resources/genesis.yaml."""
    return load_genesis()


@pytest.fixture(scope="session")
def network() -> NetworkConfig:
    """The shipped resources/network.yaml."""
    return load_network()


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    """An empty chain folder (database, keys, inbox) under tmp_path."""
    return DataLayout(tmp_path / "chain")


# -- epochs -----------------------------------------------------------------------------------------


def run_pipeline_epoch(store: ChainStore, layout: DataLayout, epoch: int) -> str:
    """Every stage of one epoch, without Dagster (stages.pipeline); returns the finalized block's hash."""
    from gonka_pipelines.stages.pipeline import run_epoch

    return run_epoch(store, layout, epoch)


def propose_pipeline_epoch(store: ChainStore, layout: DataLayout, epoch: int) -> None:
    """Every stage of one epoch up to and including the block proposal; the block is left unfinalized."""
    from gonka_pipelines.stages import pipeline

    original = pipeline.finalize_block
    pipeline.finalize_block = lambda *args, **kwargs: None
    try:
        pipeline.run_epoch(store, layout, epoch)
    finally:
        pipeline.finalize_block = original


@pytest.fixture
def run_epoch() -> Callable[[ChainStore, DataLayout, int], str]:
    """`run_epoch(store, layout, epoch)`: all stages of one epoch through to the finalized block; returns its hash."""
    return run_pipeline_epoch


@pytest.fixture
def propose_epoch() -> Callable[[ChainStore, DataLayout, int], None]:
    """`propose_epoch(store, layout, epoch)`: all stages of one epoch up to the proposal, not finalized."""
    return propose_pipeline_epoch


# -- chains -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _genesis_template(tmp_path_factory: pytest.TempPathFactory, genesis: GenesisParams, network: NetworkConfig) -> Path:
    from gonka_pipelines.stages.genesis import init_chain

    template = DataLayout(tmp_path_factory.mktemp("genesis-template") / "chain")
    with ChainStore.open(template.database) as store:
        init_chain(store, template, genesis, network)
    return template.root


@pytest.fixture(scope="session")
def _demo_template(tmp_path_factory: pytest.TempPathFactory, _genesis_template: Path, network: NetworkConfig) -> Path:
    from gonka_pipelines.simulation.workload import submit_demo_workload

    template = DataLayout(tmp_path_factory.mktemp("demo-template") / "chain")
    shutil.copytree(_genesis_template, template.root)
    with ChainStore.open(template.database) as store:
        for epoch in range(1, DEMO_EPOCHS + 1):
            submit_demo_workload(store, template, network, epoch)
            run_pipeline_epoch(store, template, epoch)
    return template.root


SMALL_EPOCH_SUBMISSIONS = (("dev-ada", 3), ("dev-grace", 2))
"""Epoch 1 of the small templates: dev-ada's nonces 0..2 and dev-grace's 0..1 (default task fields), plus one junk file."""


@pytest.fixture(scope="session")
def _proposed_template(tmp_path_factory: pytest.TempPathFactory, _genesis_template: Path, genesis: GenesisParams,
                       network: NetworkConfig) -> Path:
    template = DataLayout(tmp_path_factory.mktemp("proposed-template") / "chain")
    shutil.copytree(_genesis_template, template.root)
    submitter = TaskSubmitter(template, genesis, network)
    for developer, count in SMALL_EPOCH_SUBMISSIONS:
        submitter(count, developer)
    submitter.raw(b"junk")
    with ChainStore.open(template.database) as store:
        propose_pipeline_epoch(store, template, 1)
    return template.root


@pytest.fixture(scope="session")
def _finalized_template(tmp_path_factory: pytest.TempPathFactory, _proposed_template: Path) -> Path:
    from gonka_pipelines.stages.block import finalize_block

    template = DataLayout(tmp_path_factory.mktemp("finalized-template") / "chain")
    shutil.copytree(_proposed_template, template.root)
    with ChainStore.open(template.database) as store:
        finalize_block(store, template, 1)
    return template.root


@pytest.fixture
def initialized_layout(layout: DataLayout, _genesis_template: Path) -> DataLayout:
    """`layout` holding a chain at genesis (block 0 final), closed: open it yourself or run a subprocess on it."""
    shutil.copytree(_genesis_template, layout.root)
    return layout


@pytest.fixture
def chain(initialized_layout: DataLayout) -> Iterator[ChainStore]:
    """The genesis chain of `initialized_layout`, open for writing; closed after the test."""
    with ChainStore.open(initialized_layout.database) as store:
        yield store


@pytest.fixture
def demo_layout(tmp_path: Path, _demo_template: Path) -> DataLayout:
    """A chain folder holding genesis plus DEMO_EPOCHS finalized epochs of the demo workload, closed."""
    demo = DataLayout(tmp_path / "demo-chain")
    shutil.copytree(_demo_template, demo.root)
    return demo


@pytest.fixture
def proposed_layout(layout: DataLayout, _proposed_template: Path) -> DataLayout:
    """`layout` holding genesis plus epoch 1 (SMALL_EPOCH_SUBMISSIONS) run up to its block proposal, not final."""
    shutil.copytree(_proposed_template, layout.root)
    return layout


@pytest.fixture
def finalized_layout(layout: DataLayout, _finalized_template: Path) -> DataLayout:
    """`layout` holding genesis plus epoch 1 (SMALL_EPOCH_SUBMISSIONS) finalized, its files archived."""
    shutil.copytree(_finalized_template, layout.root)
    return layout


@pytest.fixture
def demo_chain(demo_layout: DataLayout) -> Iterator[ChainStore]:
    """The chain of `demo_layout`, open for writing; closed after the test."""
    with ChainStore.open(demo_layout.database) as store:
        yield store


# -- submissions ------------------------------------------------------------------------------------


class TaskSubmitter:
    """Signs tasks with the developers' key files of a chain folder and drops them in its inbox."""

    def __init__(self, layout: DataLayout, genesis: GenesisParams, network: NetworkConfig):
        self.layout, self.chain_id = layout, genesis.chain_id
        self.model = sorted({model for host in network.hosts for model in host.models})[0]
        self.price = genesis.tasks.price(1)

    def key(self, name: str) -> KeyPair:
        return load_key(self.layout.key_file(name))

    def sign(self, developer: str = "dev-ada", *, nonce: int, chain_id: str | None = None, key: KeyPair | None = None,
             **fields: object) -> bytes:
        """The raw bytes of one signed task; fields override model, prompt, max_tokens, max_price."""
        task = {"model": self.model, "prompt": f"task {nonce} of {developer}", "max_tokens": 4, "max_price": self.price,
                "nonce": nonce} | fields
        return sign_task(key or self.key(developer), chain_id or self.chain_id, **task)

    def raw(self, raw: bytes) -> str:
        """Drop arbitrary bytes in the inbox; returns the submission id."""
        return write_submission(self.layout.inbox, raw)

    def __call__(self, n: int = 1, developer: str = "dev-ada", *, start_nonce: int = 0, **fields: object) -> list[str]:
        """Submit n signed tasks with nonces start_nonce, start_nonce + 1, ...; returns their submission ids."""
        return [self.raw(self.sign(developer, nonce=start_nonce + i, **fields)) for i in range(n)]


@pytest.fixture
def submit(layout: DataLayout, genesis: GenesisParams, network: NetworkConfig) -> TaskSubmitter:
    """`submit(n, developer, start_nonce=..., **fields)` signs and submits n tasks to the inbox of `layout`'s chain
    (use it with initialized_layout, proposed_layout or finalized_layout, which fill `layout`)."""
    return TaskSubmitter(layout, genesis, network)


@pytest.fixture
def new_chain(tmp_path: Path, _genesis_template: Path, genesis: GenesisParams,
              network: NetworkConfig) -> Callable[[str], tuple[DataLayout, TaskSubmitter]]:
    """`new_chain(name)`: another genesis chain folder under tmp_path/name, with its own submitter."""

    def _new(name: str) -> tuple[DataLayout, TaskSubmitter]:
        other = DataLayout(tmp_path / name)
        shutil.copytree(_genesis_template, other.root)
        return other, TaskSubmitter(other, genesis, network)

    return _new
