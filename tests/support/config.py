"""Genesis and network files for tests: the shipped ones, faster variants, and small adversarial networks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gonka_pipelines.local.config import GENESIS_FILE, NETWORK_FILE, load_genesis, load_network
from gonka_pipelines.protocol.params import GenesisParams, NetworkConfig

FAST_NONCES_PER_CAPACITY = 128
"""Half the shipped 256: a capacity-2 host still mines 256 nonces, so P(no hit at 5 %) ≈ 2e-6."""



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
    """The shipped resources/network.yaml (5 honest hosts, host-fake, host-garbled, host-lazy, host-idle)."""
    return load_network(NETWORK_FILE)


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
