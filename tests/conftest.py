"""Fixtures for every test layer, from the one fixture package (tests/support).

Chains are built once per session as templates and copied for each test that writes, so every test gets its own
chain (database, key files, inbox) in its own tmp_path at the price of a file copy instead of an epoch run:
- `genesis_layout` / `genesis_store`: the shipped genesis and network at block 0;
- `demo_layout` / `demo_store`: the chain `make demo` builds (3 epochs of the demo workload), also readable in place
  as `demo_template`;
- `proposed_layout` / `finalized_layout`: epoch 1 of the genesis chain (SMALL_EPOCH_SUBMISSIONS) run up to its
  proposal, or finalized.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `support` and the helpers beside tests, from any test folder

from gonka_pipelines.chain.store import ChainStore  # noqa: E402
from gonka_pipelines.local.config import load_genesis, load_network  # noqa: E402
from gonka_pipelines.local.paths import DataLayout  # noqa: E402
from gonka_pipelines.protocol.params import GenesisParams, NetworkConfig  # noqa: E402

from support.chains import check_every_task, create_chain, run_stages  # noqa: E402
from support.chains import demo_template as build_demo_template
from support.submitter import TaskSubmitter  # noqa: E402

SMALL_EPOCH_SUBMISSIONS = (("dev-ada", 3), ("dev-grace", 2))
"""Epoch 1 of the proposed and finalized templates: dev-ada's nonces 0..2 and dev-grace's 0..1, plus one junk file."""


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may touch the repository's data/ or a developer's Dagster home, or inherit a crash point or a compute engine."""
    monkeypatch.setenv("GONKA_DATA_DIR", str(tmp_path / "default-data-dir"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for variable in ("GONKA_FAILPOINT", "GONKA_FAILPOINT_BUDGET", "GONKA_COMPUTE_ENGINE", "GONKA_RAY_ADDRESS", "GONKA_DAGSTER_STORAGE",
                     "GONKA_UI_PORT", "GONKA_RUN_GPUS"):
        monkeypatch.delenv(variable, raising=False)


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


# -- session templates ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def genesis_template(tmp_path_factory: pytest.TempPathFactory, genesis: GenesisParams, network: NetworkConfig) -> Path:
    return create_chain(tmp_path_factory.mktemp("genesis-template") / "chain", genesis, network).root


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    """The session's `make demo` chain, in place: read it only (copy it with demo_layout to write)."""
    return build_demo_template(tmp_path_factory)


@pytest.fixture(scope="session")
def proposed_template(tmp_path_factory: pytest.TempPathFactory, genesis_template: Path, genesis: GenesisParams,
                      network: NetworkConfig) -> Path:
    template = DataLayout(tmp_path_factory.mktemp("proposed-template") / "chain")
    shutil.copytree(genesis_template, template.root)
    submitter = TaskSubmitter(template, genesis, network)
    for developer, count in SMALL_EPOCH_SUBMISSIONS:
        submitter(count, developer)
    submitter.raw(b"junk")
    with ChainStore.open(template.database) as store:
        run_stages(store, template, 1, through="block_proposal")
    return template.root


@pytest.fixture(scope="session")
def finalized_template(tmp_path_factory: pytest.TempPathFactory, proposed_template: Path) -> Path:
    template = DataLayout(tmp_path_factory.mktemp("finalized-template") / "chain")
    shutil.copytree(proposed_template, template.root)
    with ChainStore.open(template.database) as store:
        run_stages(store, template, 1, through="block")
    return template.root


# -- per-test copies ----------------------------------------------------------------------------------


@pytest.fixture
def genesis_layout(layout: DataLayout, genesis_template: Path) -> DataLayout:
    """`layout` holding a chain at genesis (block 0 final), closed: open it yourself or run a subprocess on it."""
    shutil.copytree(genesis_template, layout.root)
    return layout


@pytest.fixture
def genesis_store(genesis_layout: DataLayout) -> Iterator[ChainStore]:
    """The genesis chain of `genesis_layout`, open for writing; closed after the test."""
    with ChainStore.open(genesis_layout.database) as store:
        yield store


@pytest.fixture
def demo_layout(tmp_path: Path, demo_template: DataLayout) -> DataLayout:
    """A copy of the `make demo` chain (genesis plus 3 finalized epochs of the demo workload), closed."""
    demo = DataLayout(tmp_path / "demo-chain")
    shutil.copytree(demo_template.root, demo.root)
    return demo


@pytest.fixture
def demo_store(demo_layout: DataLayout) -> Iterator[ChainStore]:
    """The chain of `demo_layout`, open for writing; closed after the test."""
    with ChainStore.open(demo_layout.database) as store:
        yield store


@pytest.fixture
def proposed_layout(layout: DataLayout, proposed_template: Path) -> DataLayout:
    """`layout` holding genesis plus epoch 1 (SMALL_EPOCH_SUBMISSIONS) run up to its block proposal, not final."""
    shutil.copytree(proposed_template, layout.root)
    return layout


@pytest.fixture
def finalized_layout(layout: DataLayout, finalized_template: Path) -> DataLayout:
    """`layout` holding genesis plus epoch 1 (SMALL_EPOCH_SUBMISSIONS) finalized, its files archived."""
    shutil.copytree(finalized_template, layout.root)
    return layout


@pytest.fixture
def submit(layout: DataLayout, genesis: GenesisParams, network: NetworkConfig) -> TaskSubmitter:
    """`submit(n, developer, start_nonce=..., **fields)` signs and submits n tasks to the inbox of `layout`'s chain
    (use it with genesis_layout, proposed_layout or finalized_layout, which fill `layout`)."""
    return TaskSubmitter(layout, genesis, network)


@pytest.fixture
def other_chain(tmp_path: Path, genesis_template: Path, genesis: GenesisParams,
                network: NetworkConfig) -> Callable[[str], tuple[DataLayout, TaskSubmitter]]:
    """`other_chain(name)`: a second genesis chain folder under tmp_path/name, with its own submitter."""

    def _new(name: str) -> tuple[DataLayout, TaskSubmitter]:
        other = DataLayout(tmp_path / name)
        shutil.copytree(genesis_template, other.root)
        return other, TaskSubmitter(other, genesis, network)

    return _new



@pytest.fixture
def every_task_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests of what validation finds rather than who is drawn (support.chains.check_every_task)."""
    check_every_task(monkeypatch)


@pytest.fixture
def settled(monkeypatch):
    """Keep the bytes of every entry whose last change predates the check's clock probe (no second of margin), and
    wait until the inbox's file system clock has moved past the newest entry, so a check keeps them all."""
    from gonka_pipelines.local import admission

    monkeypatch.setattr(admission, "SETTLED_NS", 0)

    def wait(layout) -> None:
        newest = max(entry.lstat().st_ctime_ns for entry in layout.inbox.iterdir())
        while admission.clock_probe(layout.inbox) <= newest:
            time.sleep(0.005)
    return wait
