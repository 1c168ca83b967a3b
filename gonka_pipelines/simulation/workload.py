"""The demo workload: signed tasks from the developers of network.yaml, a few deliberately bad."""

from __future__ import annotations

import random
from collections import Counter

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.inbox import write_submission
from gonka_pipelines.local.paths import RESOURCES, DataLayout
from gonka_pipelines.protocol.crypto import KeyPair, canonical_bytes
from gonka_pipelines.protocol.params import NetworkConfig
from gonka_pipelines.protocol.training import served_version
from gonka_pipelines.simulation.client import next_nonce, sign_task, sign_training

CORPUS = RESOURCES / "corpus.txt"
TASKS_PER_EPOCH = 66
TRAINING_ORDERS = 2
"""Training orders per epoch: each fine-tunes the served version for 8 steps of 4 windows on one training shard."""


def _developer_keys(layout: DataLayout, network: NetworkConfig, chain_id: str) -> dict[str, KeyPair]:
    from gonka_pipelines.local.keys import load_identities

    identities = load_identities(layout, network, chain_id)
    return {d.name: identities[d.name] for d in network.developers}


def submit_demo_workload(store: ChainStore, layout: DataLayout, network: NetworkConfig, epoch: int) -> Counter:
    """Sign about TASKS_PER_EPOCH tasks for the coming epoch, one bad submission of each kind and TRAINING_ORDERS
    training orders of the served version; returns counts by kind."""
    chain_id, params = store.chain_id, store.genesis()
    rng = random.Random(f"{chain_id}|demo-workload|{epoch}")
    prompts = [line for line in CORPUS.read_text().splitlines() if line.strip()]
    keys = _developer_keys(layout, network, chain_id)
    model = sorted({m for host in network.hosts for m in host.models})[0]
    max_tokens, price = min(16, params.tasks.max_tokens_limit), params.tasks.price_per_token
    nonces = {name: next_nonce(store.developer_nonces(name)) for name in keys}
    kinds: Counter = Counter()

    def submit(kind: str, raw: bytes) -> None:
        write_submission(layout.inbox, raw)
        kinds[kind] += 1

    def task(name: str, model: str = model, prompt: str | None = None) -> bytes:
        drawn = rng.choice(prompts)  # drawn even when overridden, so later prompts do not shift
        nonces[name] += 1
        return sign_task(keys[name], chain_id, model=model, prompt=drawn if prompt is None else prompt, max_tokens=max_tokens,
                         max_price=price, nonce=nonces[name] - 1)

    names = sorted(keys)
    for index in range(TASKS_PER_EPOCH):
        submit("honest", task(names[index % len(names)]))
    first, second = names[0], names[1 % len(names)]
    forged = task(first)
    submit("forged_signature", forged.replace(keys[first].public_key.encode(), keys[second].public_key.encode()))
    submit("unknown_model", task(first, model="llm-does-not-exist"))
    submit("prompt_too_long", task(second, prompt="x" * (params.tasks.max_prompt_bytes + 1)))
    replayed = task(second)
    submit("honest", replayed)
    submit("replay", replayed)
    submit("malformed", canonical_bytes({"body": {"prompt": "no signature, no fields"}}))
    base, shards = served_version(store.version_scores(), model), sorted(store.training_shards())
    for order in range(TRAINING_ORDERS):
        name = names[order % len(names)]
        nonces[name] += 1
        submit("training", sign_training(keys[name], chain_id, model=model, base_version=base,
                                         shards=[shards[(epoch * TRAINING_ORDERS + order) % len(shards)]], steps=8,
                                         batch_size=4, learning_rate=3e-3, seed=epoch * TRAINING_ORDERS + order,
                                         max_price=price, nonce=nonces[name] - 1))
    return kinds
