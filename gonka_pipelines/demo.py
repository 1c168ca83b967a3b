"""The demo workload (signed tasks from the developers of network.yaml, a few deliberately bad) and the chain summary."""

from __future__ import annotations

import random
from collections import Counter

from gonka_pipelines.chain.inbox import write_submission
from gonka_pipelines.chain.store import FINALIZED, ChainStore
from gonka_pipelines.client import next_nonce, sign_task
from gonka_pipelines.paths import RESOURCES, DataLayout
from gonka_pipelines.protocol.crypto import KeyPair, canonical_bytes
from gonka_pipelines.protocol.params import NetworkConfig

CORPUS = RESOURCES / "corpus.txt"
TASKS_PER_EPOCH = 66


def _developer_keys(layout: DataLayout, network: NetworkConfig, chain_id: str) -> dict[str, KeyPair]:
    from gonka_pipelines.identities import load_identities

    identities = load_identities(layout, network, chain_id)
    return {d.name: identities[d.name] for d in network.developers}


def submit_demo_workload(store: ChainStore, layout: DataLayout, network: NetworkConfig, epoch: int) -> Counter:
    """Sign about TASKS_PER_EPOCH tasks for the coming epoch plus one bad submission of each kind; returns counts by kind."""
    chain_id, params = store.chain_id, store.epoch_params(0)
    rng = random.Random(f"{chain_id}|demo-workload|{epoch}")
    prompts = [line for line in CORPUS.read_text().splitlines() if line.strip()]
    keys = _developer_keys(layout, network, chain_id)
    model = sorted({m for host in network.hosts for m in host.models})[0]
    max_tokens, price = min(16, params["tasks"]["max_tokens_limit"]), params["tasks"]["price_per_token"]
    nonces = {name: next_nonce(n for (n,) in store.query(
        "SELECT nonce FROM tasks t JOIN accounts a ON a.address = t.developer WHERE a.name = ?", [name])) for name in keys}
    kinds: Counter = Counter()

    def submit(kind: str, raw: bytes) -> None:
        write_submission(layout.inbox, raw)
        kinds[kind] += 1

    def task(name: str, **override) -> bytes:
        fields = {"model": model, "prompt": rng.choice(prompts), "max_tokens": max_tokens, "max_price": price,
                  "nonce": nonces[name]} | override
        nonces[name] += 1
        return sign_task(keys[name], chain_id, **fields)

    names = sorted(keys)
    for index in range(TASKS_PER_EPOCH):
        submit("honest", task(names[index % len(names)]))
    first, second = names[0], names[1 % len(names)]
    forged = task(first)
    submit("forged_signature", forged.replace(keys[first].public_key.encode(), keys[second].public_key.encode()))
    submit("unknown_model", task(first, model="llm-does-not-exist"))
    submit("prompt_too_long", task(second, prompt="x" * (params["tasks"]["max_prompt_bytes"] + 1)))
    replayed = task(second)
    submit("honest", replayed)
    submit("replay", replayed)
    submit("malformed", canonical_bytes({"body": {"prompt": "no signature, no fields"}}))
    return kinds


def block_summaries(store: ChainStore) -> list[dict]:
    """One row per finalized block: height, hash prefix, tasks accepted, rejections by reason, signers."""
    rejected = {}
    for epoch, reason, count in store.query("SELECT epoch, reason, count(*) FROM rejected_tasks GROUP BY 1, 2 ORDER BY 1, 2"):
        rejected.setdefault(epoch, {})[reason] = count
    rows = store.records(
        """SELECT b.height, b.hash,
                  (SELECT count(*) FROM tasks t WHERE t.epoch = b.height) AS accepted,
                  (SELECT count(*) FROM block_signatures s WHERE s.height = b.height) AS signers
           FROM blocks b WHERE b.status = ? ORDER BY b.height""", [FINALIZED])
    return [row | {"rejected": rejected.get(row["height"], {})} for row in rows]


def format_summary(rows: list[dict]) -> str:
    """A plain-text table of block_summaries."""
    lines = [f"{'height':>6}  {'hash':<14}  {'accepted':>8}  {'signers':>7}  rejected by reason", "-" * 78]
    for row in rows:
        reasons = ", ".join(f"{reason} {count}" for reason, count in row["rejected"].items()) or "-"
        lines.append(f"{row['height']:>6}  {row['hash'][:12] + '…':<14}  {row['accepted']:>8}  {row['signers']:>7}  {reasons}")
    return "\n".join(lines)


def host_summaries(store: ChainStore) -> list[dict]:
    """Per host over all finalized epochs: how often its sprint was rejected, it was INVALID or its claim refused."""
    return store.records(
        """SELECT h.name, h.behaviour,
                  count(*) FILTER (w.hits > 0 AND NOT w.sprint_accepted) AS sprints_rejected,
                  count(*) FILTER (r.status = 'INVALID') AS epochs_invalid,
                  count(*) FILTER (NOT r.claimed) AS claims_refused,
                  coalesce(sum(r.payout), 0) AS paid
           FROM hosts h
           JOIN epoch_weights w ON w.address = h.address
           JOIN rewards r ON r.address = w.address AND r.epoch = w.epoch
           JOIN blocks b ON b.height = w.epoch AND b.status = ?
           GROUP BY h.name, h.behaviour ORDER BY h.name""", [FINALIZED])


def format_hosts(rows: list[dict]) -> str:
    """A plain-text table of host_summaries with a verdict: adversaries should be caught, honest hosts never flagged."""
    lines = [f"{'host':<14} {'behaviour':<15} {'sprint rejected':>15} {'INVALID':>8} {'claim refused':>13} {'paid (base units)':>20}  verdict",
             "-" * 100]
    for row in rows:
        flagged = row["sprints_rejected"] + row["epochs_invalid"] + row["claims_refused"] > 0
        verdict = ("caught" if flagged else "NOT CAUGHT") if row["behaviour"] != "honest" else ("FLAGGED" if flagged else "ok")
        lines.append(f"{row['name']:<14} {row['behaviour']:<15} {row['sprints_rejected']:>15} {row['epochs_invalid']:>8} "
                     f"{row['claims_refused']:>13} {row['paid']:>20,}  {verdict}")
    return "\n".join(lines)
