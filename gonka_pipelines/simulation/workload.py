"""The demo workload: signed tasks from the developers of network.yaml, a few deliberately bad."""

from __future__ import annotations

import random
from collections import Counter

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.inbox import write_submission
from gonka_pipelines.local.paths import RESOURCES, DataLayout
from gonka_pipelines.protocol.crypto import KeyPair, canonical_bytes
from gonka_pipelines.protocol.params import NetworkConfig
from gonka_pipelines.simulation.client import next_nonce, sign_task, sign_training

CORPUS = RESOURCES / "corpus.txt"
TASKS_PER_EPOCH = 66
TRAINING_ORDERS = 10
"""Training orders per epoch, from the two richest developers: each fine-tunes the served version for 4 steps of 4
windows on one training shard. Ten, so that host-idle (the lazy trainer) executes a few over the demo's epochs: at this
traffic each task is validated with probability about 1 - 1/e, and with six orders it sometimes went unchecked."""


def corpus_prompts() -> list[str]:
    """Prompts from resources/corpus.txt: the first half of each line's words and a space, so a model continues the
    sentence (to a whole line, a model trained on the corpus answers with a newline and indentation, whatever it says)."""
    lines = [line.split() for line in CORPUS.read_text().splitlines() if line.strip()]
    return [" ".join(words[: max(1, len(words) // 2)]) + " " for words in lines]


def _developer_keys(layout: DataLayout, network: NetworkConfig, chain_id: str) -> dict[str, KeyPair]:
    from gonka_pipelines.local.keys import load_identities

    identities = load_identities(layout, network, chain_id)
    return {d.name: identities[d.name] for d in network.developers}


def submit_demo_workload(store: ChainStore, layout: DataLayout, network: NetworkConfig, epoch: int) -> Counter:
    """Sign about TASKS_PER_EPOCH tasks for the coming epoch (one naming the genesis version, the rest the served one),
    one bad submission of each kind and TRAINING_ORDERS training orders of the served version; returns counts by kind."""
    chain_id, params = store.chain_id, store.genesis()
    rng = random.Random(f"{chain_id}|demo-workload|{epoch}")
    prompts = corpus_prompts()
    keys = _developer_keys(layout, network, chain_id)
    model = sorted({m for host in network.hosts for m in host.models})[0]
    max_tokens, price = min(16, params.tasks.max_tokens_limit), params.tasks.price_per_token
    nonces = {name: next_nonce(store.developer_nonces(name)) for name in keys}
    kinds: Counter = Counter()

    def submit(kind: str, raw: bytes) -> None:
        write_submission(layout.inbox, raw)
        kinds[kind] += 1

    def task(name: str, model: str = model, prompt: str | None = None, version: str = "") -> bytes:
        drawn = rng.choice(prompts)  # drawn even when overridden, so later prompts do not shift
        nonces[name] += 1
        return sign_task(keys[name], chain_id, model=model, prompt=drawn if prompt is None else prompt, max_tokens=max_tokens,
                         max_price=price, nonce=nonces[name] - 1, version=version)

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
    submit("honest", task(first, version=store.served_versions(0)[model]))  # names the genesis version: untrained weights
    submit("unknown_version", task(second, version="0" * 64))
    base, shards = store.served_versions(epoch - 1)[model], sorted(store.training_shards())
    trainers = [d.name for d in sorted(network.developers, key=lambda d: (-d.balance, d.name))][:2]  # who can afford it
    for order in range(TRAINING_ORDERS):
        name = trainers[order % len(trainers)]
        nonces[name] += 1
        submit("training", sign_training(keys[name], chain_id, model=model, base_version=base,
                                         shards=[shards[(epoch * TRAINING_ORDERS + order) % len(shards)]], steps=4,
                                         batch_size=4, learning_rate=3e-3, seed=epoch * TRAINING_ORDERS + order,
                                         max_price=price, nonce=nonces[name] - 1))
    return kinds


def submit_tasks(store: ChainStore, layout: DataLayout, network: NetworkConfig, count: int, *, max_tokens: int = 4,
                 tag: str = "") -> int:
    """Sign `count` valid inference tasks round-robin over the developers (prompts from the corpus, prefixed by `tag`)
    for the coming epoch; returns the count."""
    chain_id, params = store.chain_id, store.genesis()
    keys = _developer_keys(layout, network, chain_id)
    names = sorted(keys)
    model = min(m for host in network.hosts for m in host.models)
    prompts = corpus_prompts()
    nonces = {name: next_nonce(store.developer_nonces(name)) for name in names}
    for index in range(count):
        name = names[index % len(names)]
        prompt = f"{tag}{prompts[(nonces[name] * 7 + index) % len(prompts)]}"[: params.tasks.max_prompt_bytes]
        write_submission(layout.inbox, sign_task(keys[name], chain_id, model=model, prompt=prompt, max_tokens=max_tokens,
                                                 max_price=params.tasks.price_per_token, nonce=nonces[name]))
        nonces[name] += 1
    return count
