"""Helpers for the epoch-level tests (imported explicitly; conftest.py is not touched).

Small networks and faster genesis profiles written to tmp files, signed task workloads, stage-by-stage epoch
runs, and chains built once per session and copied per test (a module-level cache, so two test modules that
want the same chain pay for it once).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.config import (
    GENESIS_FILE,
    NETWORK_FILE,
    load_genesis,
    load_network,
)
from gonka_pipelines.local.inbox import write_submission
from gonka_pipelines.local.keys import load_identities
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.params import GenesisParams, NetworkConfig
from gonka_pipelines.simulation.client import next_nonce, sign_task
from gonka_pipelines.simulation.workload import CORPUS, submit_demo_workload
from gonka_pipelines.stages.block import finalize_block, propose_block
from gonka_pipelines.stages.collect import run_collect
from gonka_pipelines.stages.environment import epoch_compute
from gonka_pipelines.stages.genesis import init_chain
from gonka_pipelines.stages.inference import run_task_execution, run_task_validation
from gonka_pipelines.stages.pipeline import quiet, run_epoch
from gonka_pipelines.stages.rewards import run_rewards
from gonka_pipelines.stages.sprint import (
    run_epoch_weights,
    run_sprint,
    run_sprint_validation,
)

FAST_NONCES_PER_CAPACITY = 128
"""Half the shipped 256: a capacity-2 host still mines 256 nonces, so P(no hit at 5 %) ≈ 2e-6."""

STAGES = ("collect", "sprint", "sprint_validation", "epoch_weights", "task_execution", "task_validation", "rewards",
          "propose", "finalize")


# -- configuration files --------------------------------------------------------------------------------------


def write_genesis(directory: Path, overrides: dict[str, Any] | None = None, profile: str = "local") -> Path:
    """A copy of the shipped genesis.yaml with dotted overrides applied to one profile (e.g. 'sprint.nonces_per_capacity')."""
    data = yaml.safe_load(GENESIS_FILE.read_text())
    for dotted, value in (overrides or {}).items():
        node = data["profiles"][profile]
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"genesis override {dotted!r}: no such field in profile {profile!r}")
        node[leaf] = value
    path = Path(directory) / "genesis.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fast_genesis(directory: Path, **overrides: Any) -> GenesisParams:
    """The local profile with FAST_NONCES_PER_CAPACITY (plus overrides), loaded from a tmp genesis.yaml."""
    values = {"sprint.nonces_per_capacity": FAST_NONCES_PER_CAPACITY} | {k.replace("__", "."): v for k, v in overrides.items()}
    return load_genesis(path=write_genesis(directory, values))


def write_network(directory: Path, hosts: list[dict], developers: list[dict], key_seed: str | None = "epoch-tests") -> Path:
    """A network.yaml with these hosts and developers (deterministic keys from key_seed)."""
    data: dict[str, Any] = {"hosts": hosts, "developers": developers}
    if key_seed is not None:
        data["key_seed"] = key_seed
    path = Path(directory) / "network.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def small_network(directory: Path, hosts: list[tuple[str, int] | tuple[str, int, str]],
                  developers: tuple[tuple[str, int], ...] = (("dev-ada", 10**12),), key_seed: str = "epoch-tests") -> NetworkConfig:
    """Hosts given as (name, capacity[, behaviour]) serving llm-tiny; written to directory/network.yaml and loaded."""
    host_rows = [{"name": h[0], "capacity": h[1], "models": ["llm-tiny"], **({"behaviour": h[2]} if len(h) > 2 else {})}
                 for h in hosts]
    dev_rows = [{"name": name, "balance": balance} for name, balance in developers]
    return load_network(write_network(directory, host_rows, dev_rows, key_seed))


def demo_network() -> NetworkConfig:
    """The shipped resources/network.yaml (5 honest hosts, host-fake, host-garbled, host-lazy)."""
    return load_network(NETWORK_FILE)


# -- chains ---------------------------------------------------------------------------------------------------


def new_chain(root: Path, genesis: GenesisParams, network: NetworkConfig) -> DataLayout:
    """A genesis chain (block 0 final) under root."""
    layout = DataLayout(Path(root))
    with ChainStore.open(layout.database) as store:
        init_chain(store, layout, genesis, network)
    return layout


@contextmanager
def opened(layout: DataLayout, read_only: bool = False) -> Iterator[ChainStore]:
    with ChainStore.open(layout.database, read_only=read_only) as store:
        yield store


def submit_tasks(store: ChainStore, layout: DataLayout, network: NetworkConfig, count: int, *, max_tokens: int = 4,
                 tag: str = "") -> int:
    """Sign `count` valid tasks round-robin over the developers (prompts from the corpus); returns the count."""
    chain_id, params = store.chain_id, store.epoch_params(0)
    identities = load_identities(layout, network, chain_id)
    names = sorted(d.name for d in network.developers)
    model = min(m for host in network.hosts for m in host.models)
    prompts = [line for line in CORPUS.read_text().splitlines() if line.strip()]
    nonces = {name: next_nonce(n for (n,) in store.query(
        "SELECT nonce FROM tasks t JOIN accounts a ON a.address = t.developer WHERE a.name = ?", [name])) for name in names}
    for index in range(count):
        name = names[index % len(names)]
        prompt = f"{tag}{prompts[(nonces[name] * 7 + index) % len(prompts)]}"[: params["tasks"]["max_prompt_bytes"]]
        raw = sign_task(identities[name], chain_id, model=model, prompt=prompt, max_tokens=max_tokens,
                        max_price=params["tasks"]["price_per_token"], nonce=nonces[name])
        nonces[name] += 1
        write_submission(layout.inbox, raw)
    return count


def run_stages(store: ChainStore, layout: DataLayout, epoch: int, through: str = "finalize", log=quiet) -> dict[str, Any]:
    """Run the epoch's stages in order up to and including `through`; returns each stage's result by name."""
    if through not in STAGES:
        raise ValueError(f"unknown stage {through!r}; stages: {', '.join(STAGES)}")
    out: dict[str, Any] = {}
    compute = None
    for name in STAGES:
        if name == "collect":
            out[name] = run_collect(store, layout, epoch)
            compute = epoch_compute(store, epoch)
        elif name == "sprint":
            out[name] = run_sprint(store, layout, epoch, log, compute)
        elif name == "sprint_validation":
            out[name] = run_sprint_validation(store, layout, epoch, log, compute)
        elif name == "epoch_weights":
            out[name] = run_epoch_weights(store, epoch)
        elif name == "task_execution":
            out[name] = run_task_execution(store, layout, epoch, log, compute)
        elif name == "task_validation":
            out[name] = run_task_validation(store, layout, epoch, log, compute)
        elif name == "rewards":
            out[name] = run_rewards(store, layout, epoch)
        elif name == "propose":
            out[name] = propose_block(store, layout, epoch)
        elif name == "finalize":
            out[name] = finalize_block(store, layout, epoch)
        if name == through:
            return out
    raise AssertionError("unreachable")


def names_by_address(store: ChainStore) -> dict[str, str]:
    return dict(store.query("SELECT address, name FROM accounts"))


# -- session cache of built chains ----------------------------------------------------------------------------

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


def build_demo_chain(root: Path, epochs: int = 3) -> None:
    """Exactly the chain `make demo` builds: the shipped genesis and demo network, `epochs` epochs of the demo
    workload (via run_epoch), so what these tests pin is what a user sees."""
    genesis = load_genesis()
    network = demo_network()
    layout = new_chain(root, genesis, network)
    with opened(layout) as store:
        for epoch in range(1, epochs + 1):
            submit_demo_workload(store, layout, network, epoch)
            run_epoch(store, layout, epoch)


DEMO_EPOCHS = 3


def demo_chain(tmp_path_factory) -> DataLayout:
    """The session's demo chain after DEMO_EPOCHS epochs (read it; copy it before writing)."""
    base = tmp_path_factory.getbasetemp()
    return DataLayout(cached_chain("demo", base, lambda root: build_demo_chain(root, DEMO_EPOCHS)))


SMALL_HOSTS = [("host-alpha", 2), ("host-bravo", 2), ("host-charlie", 1), ("host-fake", 1, "fake_hits"),
               ("host-lazy", 1, "lazy_validator")]
"""Three honest hosts, a fake_hits and a lazy_validator: every payout case but INVALID, in a second per epoch."""
SMALL_EPOCHS = 2
SMALL_TASKS = 6
SMALL_NONCES_PER_CAPACITY = 64


def small_config(directory: Path) -> tuple[GenesisParams, NetworkConfig]:
    """The small adversarial network and its genesis (sprint budget 64 nonces per capacity), written under directory."""
    genesis = fast_genesis(directory, sprint__nonces_per_capacity=SMALL_NONCES_PER_CAPACITY)
    return genesis, small_network(directory, SMALL_HOSTS)


def build_small_chain(root: Path, epochs: int = SMALL_EPOCHS, tasks: int = SMALL_TASKS) -> tuple[DataLayout, NetworkConfig]:
    """A fresh chain of the small network, `epochs` epochs run stage by stage with `tasks` tasks each."""
    root = Path(root)
    genesis, network = small_config(root.parent / f"{root.name}-config")
    layout = new_chain(root, genesis, network)
    with opened(layout) as store:
        for epoch in range(1, epochs + 1):
            submit_tasks(store, layout, network, tasks)
            run_stages(store, layout, epoch)
    return layout, network


def small_chain(tmp_path_factory) -> tuple[DataLayout, NetworkConfig]:
    """The session's small adversarial chain after SMALL_EPOCHS epochs (read it; copy it before writing)."""
    root = cached_chain("small", tmp_path_factory.getbasetemp(), lambda r: build_small_chain(r))
    return DataLayout(root), small_config(root.parent / f"{root.name}-config")[1]
