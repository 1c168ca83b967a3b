"""Signing tasks with a chain folder's developer keys and dropping them (or any bytes) into its inbox."""

from __future__ import annotations

from gonka_pipelines.local.inbox import write_bundle, write_submission
from gonka_pipelines.local.keys import load_key
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import KeyPair
from gonka_pipelines.protocol.params import GenesisParams, NetworkConfig
from gonka_pipelines.simulation.client import sign_task, sign_training


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

    def train(self, developer: str = "dev-ada", *, nonce: int, base_version: str, shards: list[str], **fields: object) -> str:
        """Order training (4 steps of 4 windows by default) and drop it in the inbox; returns the submission id."""
        order = {"model": self.model, "steps": 4, "batch_size": 4, "learning_rate": 3e-3, "seed": 11, "max_price": self.price,
                 "nonce": nonce} | fields
        return self.raw(sign_training(self.key(developer), self.chain_id, base_version=base_version, shards=shards, **order))

    def raw(self, raw: bytes) -> str:
        """Drop arbitrary bytes in the inbox; returns the submission id."""
        return write_submission(self.layout.inbox, raw)

    def bundle(self, raws: list[bytes]) -> str:
        """Drop these submissions in the inbox as one bundle; returns the bundle's id (line i is `ID/i`)."""
        return write_bundle(self.layout.inbox, raws)

    def __call__(self, n: int = 1, developer: str = "dev-ada", *, start_nonce: int = 0, **fields: object) -> list[str]:
        """Submit n signed tasks with nonces start_nonce, start_nonce + 1, ...; returns their submission ids."""
        return [self.raw(self.sign(developer, nonce=start_nonce + i, **fields)) for i in range(n)]
