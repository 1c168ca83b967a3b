"""Sprint stages: hosts mine and submit signed batches, validators recompute samples and vote, weights follow."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import MessageKind, hash_value
from gonka_pipelines.protocol.messages import poc_verdicts_body
from gonka_pipelines.protocol.params import Behaviour
from gonka_pipelines.protocol.poc_batches import PocBatch, admit_batches
from gonka_pipelines.protocol.sprint import (
    cap_fraction,
    collateral_adjust,
    count_mismatches,
    is_fraud,
    power_cap,
    sample_nonces,
    sprint_accepted,
)
from gonka_pipelines.stages.environment import Log, epoch_context


def _honest_batches(compute: TorchCompute, host: dict, params: dict) -> list[tuple[list[int], list[float], float]]:
    """Mine the host's nonce budget (simulation) or for the sprint duration (real), one batch per model batch."""
    sprint, chunk = params["sprint"], compute.sprint_batch_size
    budget = host["capacity"] * sprint["nonces_per_capacity"]
    batches, start, started = [], 0, time.monotonic()
    while True:
        if sprint["mode"] == "simulation":
            if start >= budget:
                break
            size = min(chunk, budget - start)
            submitted_at = (start + size) / budget * sprint["duration_seconds"]
        else:
            if time.monotonic() - started >= sprint["duration_seconds"]:
                break
            size = chunk
        nonces, distances = compute.mine(host["public_key"], start, size, params["r_target"])
        if sprint["mode"] == "real":
            submitted_at = time.monotonic() - started
        if nonces:
            batches.append((nonces, distances, submitted_at))
        start += size
    return batches


def _fake_batches(host: dict, seed: str, params: dict) -> list[tuple[list[int], list[float], float]]:
    """fake_hits: claim random nonces as hits without computing; also resend one and send one after the deadline."""
    sprint = params["sprint"]
    rng = random.Random(hash_value(["fake_hits", seed, host["address"]]))
    budget = host["capacity"] * sprint["nonces_per_capacity"]
    nonces = sorted(rng.sample(range(budget * 1000), budget))
    distances = [rng.uniform(0.5 * params["r_target"], params["r_target"]) for _ in nonces]
    half, late = budget // 2, sprint["duration_seconds"] + sprint["late_grace_seconds"] + 1
    return [(nonces[:half], distances[:half], sprint["duration_seconds"] / 2),
            (nonces[half:], distances[half:], sprint["duration_seconds"]),
            (nonces[:1], distances[:1], sprint["duration_seconds"]),
            ([budget * 1000 + 1], [distances[0]], late)]


def run_sprint(store: ChainStore, layout: DataLayout, epoch: int, log: Log = print, compute: TorchCompute | None = None) -> dict:
    """Every host mines and signs its batches; the chain admits or rejects each. Returns counts."""
    ctx = epoch_context(store, layout, epoch, compute)
    params, seed, chain_id, keys = ctx.params, ctx.seed, ctx.chain_id, ctx.keys
    hosts = store.records("SELECT address, name, public_key, capacity, behaviour FROM hosts ORDER BY address")
    submitted: list[PocBatch] = []
    for host in hosts:
        mined = (_fake_batches(host, seed, params) if host["behaviour"] == Behaviour.FAKE_HITS
                 else _honest_batches(ctx.compute, host, params))
        for sequence, (nonces, distances, submitted_at) in enumerate(mined):
            batch = PocBatch(host["address"], host["public_key"], seed, sequence, tuple(nonces), tuple(distances), submitted_at)
            signature = keys[host["address"]].sign(chain_id, MessageKind.POC_BATCH, batch.body(epoch))
            submitted.append(dataclasses.replace(batch, signature=signature))
        log(f"sprint: {host['name']} submitted {len(mined)} batches, {sum(len(m[0]) for m in mined)} claimed hits")
    deadline = params["sprint"]["duration_seconds"] + params["sprint"]["late_grace_seconds"]
    verdicts = admit_batches(submitted, chain_id, epoch, seed, deadline)
    rows = [{"batch_id": hash_value([epoch, b.host, b.sequence, b.signature]), "epoch": epoch, "host": b.host,
             "sequence": b.sequence, "nonces": list(b.nonces), "distances": list(b.distances), "submitted_at": b.submitted_at,
             "signature": b.signature, "status": "rejected" if v else "accepted", "reason": v.value if v else None}
            for b, v in zip(submitted, verdicts)]
    with store.transaction():
        store.delete_epoch_rows(epoch, ["poc_batches"])
        store.insert("poc_batches", rows)
    return {"batches": len(rows), "rejected": sum(1 for v in verdicts if v),
            "claimed_hits": sum(len(b.nonces) for b, v in zip(submitted, verdicts) if v is None)}


@dataclass(frozen=True)
class _Claim:
    host: str
    public_key: str
    nonces: list[int]


def run_sprint_validation(store: ChainStore, layout: DataLayout, epoch: int, log: Log = print,
                          compute: TorchCompute | None = None) -> dict:
    """Each validator with weight samples min(200, n) of every other host's hits, recomputes and signs a verdict."""
    ctx = epoch_context(store, layout, epoch, compute)
    params, seed, chain_id, keys = ctx.params, ctx.seed, ctx.chain_id, ctx.keys
    sprint = params["sprint"]
    behaviour = dict(store.query("SELECT address, behaviour FROM hosts"))
    validators = [a for a, w in ctx.weights.items() if w > 0]
    claims = [_Claim(host, keys[host].public_key, sorted(n for nonces in lists for n in nonces)) for host, lists in store.query(
        "SELECT host, list(nonces ORDER BY sequence) FROM poc_batches WHERE epoch = ? AND status = 'accepted' GROUP BY host ORDER BY host",
        [epoch])]
    rows = []
    for claim in claims:
        samples = {v: sample_nonces(keys[v].public_key, seed, epoch, claim.nonces, sprint["validation_sample"])
                   for v in validators if v != claim.host}
        needed = sorted({n for v, s in samples.items() if behaviour[v] != Behaviour.LAZY_VALIDATOR for n in s})
        recomputed = dict(zip(needed, ctx.compute.distances(claim.public_key, needed)))
        for validator, sample in samples.items():
            lazy = behaviour[validator] == Behaviour.LAZY_VALIDATOR
            mismatches = 0 if lazy else count_mismatches([recomputed[n] for n in sample], params["r_target"])
            valid = lazy or not is_fraud(mismatches, len(sample), sprint["mismatch_probability"], sprint["fraud_threshold"])
            rows.append({"epoch": epoch, "validator": validator, "host": claim.host, "sampled": len(sample),
                         "mismatches": mismatches, "valid": valid, "recomputed": not lazy})
        log(f"sprint validation: {claim.host[:14]}… {len(claim.nonces)} hits, recomputed {len(needed)} nonces")
    by_validator: dict[str, list[dict]] = {}
    for row in rows:
        by_validator.setdefault(row["validator"], []).append(row)
    signatures = [{"epoch": epoch, "validator": validator,
                   "signature": keys[validator].sign(chain_id, MessageKind.POC_VERDICT, poc_verdicts_body(epoch, validator, verdicts))}
                  for validator, verdicts in sorted(by_validator.items())]
    with store.transaction():
        store.delete_epoch_rows(epoch, ["poc_verdicts", "poc_verdict_signatures"])
        store.insert("poc_verdicts", rows)
        store.insert("poc_verdict_signatures", signatures)
    return {"verdicts": len(rows), "invalid_votes": sum(1 for r in rows if not r["valid"])}


def compute_epoch_weights(store: ChainStore, epoch: int) -> list[dict]:
    """Accepted hits → acceptance by weighted vote → collateral adjustment → power cap, per host."""
    params = store.epoch_params(epoch)
    sprint = params["sprint"]
    in_force = store.weights(epoch - 1)
    total_in_force = sum(in_force.values())
    rows = store.records(
        """SELECT h.address, coalesce(b.hits, 0) AS hits, coalesce(v.valid_weight, 0) AS valid_vote_weight,
                  s.collateral
           FROM hosts h
           LEFT JOIN (SELECT host, sum(len(nonces)) hits FROM poc_batches WHERE epoch = ? AND status = 'accepted' GROUP BY host) b
             ON b.host = h.address
           LEFT JOIN (SELECT v.host, sum(w.weight) valid_weight FROM poc_verdicts v
                      JOIN host_states w ON w.address = v.validator AND w.epoch = ? WHERE v.epoch = ? AND v.valid GROUP BY v.host) v
             ON v.host = h.address
           JOIN account_states s ON s.address = h.address AND s.epoch = ?
           ORDER BY h.address""",
        [epoch, epoch - 1, epoch, epoch - 1])
    for row in rows:
        row["sprint_accepted"] = row["hits"] > 0 and sprint_accepted(row["valid_vote_weight"], total_in_force)
        row["adjusted_weight"] = collateral_adjust(
            row["hits"] if row["sprint_accepted"] else 0, row.pop("collateral"), sprint["price_per_weight_unit"],
            epoch, sprint["collateral_grace_epochs"])
    eligible = sum(1 for row in rows if row["adjusted_weight"] > 0)
    capped = power_cap([row["adjusted_weight"] for row in rows], cap_fraction(eligible, sprint["power_cap"]))
    return [{**row, "epoch": epoch, "weight": weight} for row, weight in zip(rows, capped)]


def run_epoch_weights(store: ChainStore, epoch: int) -> list[dict]:
    """Write the epoch's new weights with lineage to the accepted batches behind them."""
    rows = compute_epoch_weights(store, epoch)
    with store.transaction():
        store.delete_epoch_rows(epoch, ["epoch_weights"], stage="sprint_weights")
        store.insert("epoch_weights", rows)
        store.connection.execute(
            """INSERT INTO lineage SELECT epoch, 'weight', host, 'poc_batch', batch_id, 'sprint_weights:hits'
               FROM poc_batches WHERE epoch = ? AND status = 'accepted' ORDER BY batch_id""", [epoch])
    return rows
