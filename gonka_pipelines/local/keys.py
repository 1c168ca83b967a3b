"""Key files: ed25519 seeds readable by their owner only, and the keys of network.yaml's hosts and developers
(derived, generated or brought) kept under data/keys/."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import KeyPair
from gonka_pipelines.protocol.params import DeveloperConfig, HostConfig, NetworkConfig


def save_key(path: Path, keypair: KeyPair) -> None:
    """Write the 32-byte seed as hex, readable by the owner only (0600) from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(keypair.seed.hex() + "\n")
    os.chmod(path, 0o600)


def load_key(path: Path) -> KeyPair:
    """Read a key file, refusing one that others can read."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"{path}: key file mode is {oct(mode)}, must be 0600 (chmod 600 {path})")
    text = path.read_text().strip()
    try:
        return KeyPair.from_seed(bytes.fromhex(text))
    except ValueError as error:
        raise ValueError(f"{path}: not a key file ({error})") from error


@dataclass(frozen=True)
class Identities:
    """Every simulated participant's key pair, by name and by address."""

    keys: dict[str, KeyPair]

    def __getitem__(self, name: str) -> KeyPair:
        return self.keys[name]


def load_identities(layout: DataLayout, network: NetworkConfig, chain_id: str) -> Identities:
    """Load each participant's key, creating missing key files (derived from key_seed when set, else random)."""
    keys = {}
    participants: list[HostConfig | DeveloperConfig] = [*network.hosts, *network.developers]
    for participant in participants:
        path = participant.key or layout.key_file(participant.name)
        if path.exists():
            pair = load_key(path)
            if network.key_seed is not None and pair != KeyPair.derive(chain_id, participant.name, network.key_seed):
                raise ValueError(f"{path}: key differs from the one derived from key_seed; remove the file or the key_seed")
        elif participant.key is not None:
            raise FileNotFoundError(f"{path}: key file of {participant.name} not found")
        else:
            pair = (KeyPair.derive(chain_id, participant.name, network.key_seed) if network.key_seed is not None
                    else KeyPair.generate())
            save_key(path, pair)
        keys[participant.name] = pair
    return Identities(keys)
