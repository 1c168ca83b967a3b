"""Sprint stages: hosts mine and submit signed batches, validators recompute samples and vote, weights follow."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from gonka_pipelines.compute.engine import Compute
from gonka_pipelines.protocol.crypto import MessageKind, hash_value, sign_each
from gonka_pipelines.protocol.messages import poc_verdicts_body
from gonka_pipelines.protocol.params import SprintParams
from gonka_pipelines.protocol.poc_batches import PocBatch
from gonka_pipelines.protocol.records import BatchStatus, Host
from gonka_pipelines.simulation.behaviours import (
    MinedBatch,
    colluders,
    collusion_target,
    copied_batches,
    fake_batches,
    inflated_batches,
    mines_honestly,
    mines_past_the_deadline,
    resubmitted,
    sends_verdicts,
    skips_recomputation,
    vouches_for_itself,
)
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain


@dataclass(frozen=True)
class MiningOrder:
    """What one host mines in the sprint (a work item: the same bytes wherever it runs)."""

    public_key: str
    capacity: int
    sprint: SprintParams
    r_target: float
    late: bool
    """late_batches: after its budget each ML node mines one more model batch, submitted past the deadline and grace."""


MINED_SCHEMA = pa.schema([("nonces", pa.list_(pa.int64())), ("distances", pa.list_(pa.float64())),
                          ("submitted_at", pa.float64()), ("late", pa.bool_())])
"""A host's mined batches as they come back from wherever it mined: one row per batch with hits."""


def mine_host(compute: Compute, order: MiningOrder) -> pa.Table:
    """A host's honest batches, then its late ones (when its behaviour mines past the deadline), as MINED_SCHEMA rows."""
    batches = [(*batch, False) for batch in _honest_batches(compute, order)]
    if order.late:
        batches += [(*batch, True) for batch in _late_batches(compute, order)]
    return pa.Table.from_pylist([dict(zip(MINED_SCHEMA.names, batch)) for batch in batches], schema=MINED_SCHEMA)


def _honest_batches(compute: Compute, order: MiningOrder) -> list[MinedBatch]:
    """Mine with one ML node per capacity unit, node i of n on its own stream i, i + n, i + 2n, ... (PROTOCOL section 3,
    Gonka's NonceIterator): nonces_per_capacity per node (simulation) or round-robin for the sprint duration (real);
    one batch per model batch."""
    sprint, chunk, nodes = order.sprint, compute.sprint_batch_size, order.capacity
    per_node = sprint.nonces_per_capacity
    batches: list[MinedBatch] = []
    mined, started = [0] * nodes, time.monotonic()
    while True:
        progressed = False
        for node in range(nodes):
            if sprint.mode == "simulation":
                if mined[node] >= per_node:
                    continue
                size = min(chunk, per_node - mined[node])
            elif time.monotonic() - started >= sprint.duration_seconds:
                return batches
            else:
                size = chunk
            nonces, distances = compute.mine(order.public_key, node + mined[node] * nodes, size, order.r_target, nodes)
            mined[node] += size
            submitted_at = (mined[node] / per_node * sprint.duration_seconds if sprint.mode == "simulation"
                            else time.monotonic() - started)
            if nonces:
                batches.append((nonces, distances, submitted_at))
            progressed = True
        if not progressed:
            return batches


LATE_STREAM_OFFSET = 2**40
"""late_batches in real mode: where each node's late stream starts (no node mines 2**40 nonces in a sprint)."""


def _late_batches(compute: Compute, order: MiningOrder) -> list[MinedBatch]:
    """One model batch per ML node further along its own stream, submitted after the deadline and its grace."""
    sprint, nodes = order.sprint, order.capacity
    late = sprint.duration_seconds + sprint.late_grace_seconds + 1
    mined_per_node = sprint.nonces_per_capacity if sprint.mode == "simulation" else LATE_STREAM_OFFSET  # real mode: far beyond
    batches: list[MinedBatch] = []
    for node in range(nodes):
        nonces, distances = compute.mine(order.public_key, node + mined_per_node * nodes, compute.sprint_batch_size,
                                         order.r_target, nodes)
        if nonces:
            batches.append((nonces, distances, late))
    return batches


def _claimed_batches(env: EpochEnvironment, host: Host, mined: dict[str, list[MinedBatch]],
                     late: dict[str, list[MinedBatch]]) -> list[MinedBatch]:
    """What a host submits: its mined batches as its behaviour shapes them, or, if it does not mine, a copy or fakes."""
    copied = copied_batches(host, env.hosts, mined)
    if copied is not None:
        return copied
    if not mines_honestly(host):
        return fake_batches(host, env.prev_hash, env.params)
    return resubmitted(host, inflated_batches(host, env.prev_hash, env.params, mined[host.address])) + late[host.address]


def _mine(env: EpochEnvironment) -> tuple[dict[str, list[MinedBatch]], dict[str, list[MinedBatch]]]:
    """Every mining host's honest and late batches by address, each host's mining a work item on the engine."""
    miners = [host for host in env.hosts if mines_honestly(host)]
    orders = [MiningOrder(host.public_key, host.capacity, env.params.sprint, env.params.r_target, mines_past_the_deadline(host))
              for host in miners]
    mined: dict[str, list[MinedBatch]] = {}
    late: dict[str, list[MinedBatch]] = {}
    for host, table in zip(miners, env.on_hosts(mine_host, orders)):
        rows = table.to_pylist()
        mined[host.address] = [(r["nonces"], r["distances"], r["submitted_at"]) for r in rows if not r["late"]]
        late[host.address] = [(r["nonces"], r["distances"], r["submitted_at"]) for r in rows if r["late"]]
    return mined, late


def run_sprint(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> dict[str, int]:
    """Every host mines and signs its batches; the chain admits or rejects each. Returns counts."""
    epoch, prev_hash = env.epoch, env.prev_hash
    mined, late = _mine(env)
    unsigned: list[PocBatch] = []
    for host in env.hosts:
        claimed = _claimed_batches(env, host, mined, late)
        unsigned += [PocBatch(host.address, host.public_key, prev_hash, sequence, tuple(nonces), tuple(distances), submitted_at)
                     for sequence, (nonces, distances, submitted_at) in enumerate(claimed)]
        log(f"sprint: {host.name} submitted {len(claimed)} batches, {sum(len(m[0]) for m in claimed)} claimed hits")
    signatures = sign_each(env.chain_id, MessageKind.POC_BATCH, [(env.keys[batch.host], batch.body(epoch)) for batch in unsigned])
    submitted = [dataclasses.replace(batch, signature=signature) for batch, signature in zip(unsigned, signatures)]
    verdicts = env.rules.admit_batches(submitted, env.chain_id, prev_hash)
    rows = [{"batch_id": hash_value([epoch, b.host, b.sequence, b.signature]), "epoch": epoch, "host": b.host,
             "sequence": b.sequence, "nonces": list(b.nonces), "distances": list(b.distances), "submitted_at": b.submitted_at,
             "signature": b.signature, "status": BatchStatus.REJECTED if v else BatchStatus.ACCEPTED,
             "reason": v.value if v else None}
            for b, v in zip(submitted, verdicts)]
    with open_chain() as store:
        store.write_poc_batches(epoch, rows)
    return {"batches": len(rows), "rejected": sum(1 for v in verdicts if v),
            "claimed_hits": sum(len(b.nonces) for b, v in zip(submitted, verdicts) if v is None)}


HOSTS_PER_ROUND = 64
"""Sprint validation plans and recomputes this many hosts at a time: enough to keep a cluster's workers busy, few
enough that the validators' samples of every host are never held at once (10,000 validators x 200 nonces per host)."""


VERDICT_FIELDS = ("hosts", "sampled", "mismatches", "recomputed", "valid")
"""A validator's verdict record: per host it checked, in the order checked."""

VERDICT_TYPES = (pa.string(), pa.int32(), pa.int32(), pa.bool_(), pa.bool_())
"""The Arrow type of each VERDICT_FIELDS vector's items (the chain's poc_verdict_sets columns)."""


def run_sprint_validation(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> dict[str, int]:
    """Each validator asked to check a host (every validator with weight, or the host's committee) samples min(200, n)
    of its hits, recomputes and votes; a validator signs one record over all its votes (a silent validator sends none;
    colluders vote their target's sprint invalid without recomputing)."""
    epoch = env.epoch
    with open_chain() as store:
        claims = store.accepted_claims(epoch)
    lazy = {h.address for h in env.hosts if skips_recomputation(h)}
    cheats = {h.address for h in env.hosts if vouches_for_itself(h)}
    target, against = collusion_target(env.hosts), colluders(env.hosts)
    voting = {h.address for h in env.hosts if sends_verdicts(h)}
    committees = env.rules.sprint_committees(env.prev_hash, [host for host, _ in claims], env.weights)
    records: defaultdict[str, list[tuple[str, int, int, bool, bool]]] = defaultdict(list)  # one VERDICT_FIELDS tuple per vote
    for start in range(0, len(claims), HOSTS_PER_ROUND):
        plans = []
        for host, nonces in claims[start:start + HOSTS_PER_ROUND]:
            # A host's own vote counts under full validation, as in Gonka: an honest one checks itself like any other;
            # a cheat vouches for itself. A committee never holds the host it checks.
            voters = [v for v in committees[host] if v in voting]
            samples = dict(zip(voters, env.rules.validation_samples([env.keys[v].public_key for v in voters], env.prev_hash, nonces)))
            unchecked = lazy | ({host} & cheats) | (against if host == target else set())
            needed = sorted({n for v, s in samples.items() if v not in unchecked for n in s})
            plans.append((host, len(nonces), samples, unchecked, needed))
        recomputations = env.on_hosts(recompute_distances, [(env.keys[plan[0]].public_key, plan[-1]) for plan in plans])
        for (host, hits, samples, unchecked, needed), distances in zip(plans, recomputations):
            recomputed = dict(zip(needed, distances))
            lying = against if host == target else set()
            votes_of: dict[tuple[int, ...], tuple[int, bool]] = {}  # validators that drew the same sample cast the same vote
            for validator, sample in samples.items():
                skipped = validator in unchecked
                if validator in lying or skipped:
                    mismatches, valid = (len(sample), False) if validator in lying else (0, True)
                else:
                    key = tuple(sample)
                    if key not in votes_of:
                        votes_of[key] = env.rules.sprint_vote([recomputed[n] for n in sample])
                    mismatches, valid = votes_of[key]
                records[validator].append((host, len(sample), mismatches, not skipped, valid))
            log(f"sprint validation: {host[:14]}… {hits} hits, {len(samples)} validators, recomputed {len(needed)} nonces")
    table = _signed_verdict_records(env, records)
    with open_chain() as store:
        store.write_poc_verdicts(epoch, table)
    votes = [valid for record in records.values() for *_, valid in record]
    return {"verdicts": len(votes), "invalid_votes": votes.count(False), "validators": table.num_rows}


def _signed_verdict_records(env: EpochEnvironment, records: Mapping[str, list[tuple[str, int, int, bool, bool]]]) -> pa.Table:
    """Each validator's votes as one signed record (VERDICT_FIELDS vectors in the order it checked), by address, as
    the columns of poc_verdict_sets: the vectors are cut from one flat column per field."""
    validators = sorted(records)
    votes = [vote for validator in validators for vote in records[validator]]
    fields = [list(column) for column in zip(*votes)] if votes else [[] for _ in VERDICT_FIELDS]
    offsets = list(itertools.accumulate((len(records[validator]) for validator in validators), initial=0))
    hosts, sampled, mismatches, _, valid = fields
    signatures = sign_each(env.chain_id, MessageKind.POC_VERDICT, [(env.keys[validator], poc_verdicts_body(
        env.epoch, validator, hosts[begin:end], sampled[begin:end], mismatches[begin:end], valid[begin:end]))
        for validator, begin, end in zip(validators, offsets, offsets[1:])])
    starts = pa.array(offsets, pa.int32())
    return pa.table({"epoch": pa.array([env.epoch] * len(validators), pa.int64()), "validator": pa.array(validators, pa.string()),
                     **{name: pa.ListArray.from_arrays(starts, pa.array(field, kind))
                        for name, kind, field in zip(VERDICT_FIELDS, VERDICT_TYPES, fields)},
                     "signature": pa.array(signatures, pa.string())})


def recompute_distances(compute: Compute, order: tuple[str, list[int]]) -> np.ndarray:
    """A work item of sprint validation: the distances of a host's (public key's) sampled nonces, recomputed."""
    public_key, nonces = order
    return compute.distances(public_key, nonces)


def run_epoch_weights(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> list[dict]:
    """Write the epoch's new weights with lineage to the accepted batches behind them."""
    with open_chain() as store:
        rows = env.rules.epoch_weights(store.weight_inputs(env.epoch), env.prev_hash, env.weights)
        store.write_epoch_weights(env.epoch, rows)
    log(f"weights: {sum(r['weight'] for r in rows)} in total, {sum(1 for r in rows if r['hits'] and not r['sprint_accepted'])} "
        "sprints rejected")
    return rows
