"""Signing keys of the chain's hosts, read from data/keys/ and checked against the keys the chain knows."""

from __future__ import annotations

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.paths import DataLayout
from gonka_pipelines.protocol.crypto import KeyPair, load_key


def host_keys(store: ChainStore, layout: DataLayout) -> dict[str, KeyPair]:
    """Key pair of every host by address; a missing or foreign key file is an error naming the file."""
    keys = {}
    for address, name, public_key in store.query("SELECT address, name, public_key FROM hosts ORDER BY address"):
        path = layout.key_file(name)
        if not path.exists():
            raise FileNotFoundError(f"{path}: key file of host {name} not found (simulated hosts sign from data/keys/)")
        pair = load_key(path)
        if pair.public_key != public_key:
            raise ValueError(f"{path}: key does not match host {name}'s public key on the chain")
        keys[address] = pair
    return keys
