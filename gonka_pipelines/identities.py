"""Key files for the hosts and developers of network.yaml: derived, generated or brought, kept under data/keys/."""

from __future__ import annotations

from dataclasses import dataclass

from gonka_pipelines.paths import DataLayout
from gonka_pipelines.protocol.crypto import KeyPair, load_key, save_key
from gonka_pipelines.protocol.params import NetworkConfig


@dataclass(frozen=True)
class Identities:
    """Every simulated participant's key pair, by name and by address."""

    keys: dict[str, KeyPair]

    def __getitem__(self, name: str) -> KeyPair:
        return self.keys[name]


def load_identities(layout: DataLayout, network: NetworkConfig, chain_id: str) -> Identities:
    """Load each participant's key, creating missing key files (derived from key_seed when set, else random)."""
    keys = {}
    for participant in (*network.hosts, *network.developers):
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
