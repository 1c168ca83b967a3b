"""Sprint stages: hosts mine and submit signed batches, validators recompute samples and vote, weights follow."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa

from gonka_pipelines.chain.hashing import json_texts
from gonka_pipelines.compute.engine import Compute
from gonka_pipelines.protocol.crypto import MessageKind, hash_value, message_prefix, sign_each, sign_messages
from gonka_pipelines.protocol.messages import poc_verdicts_body
from gonka_pipelines.protocol.params import SprintParams
from gonka_pipelines.protocol.poc_batches import PocBatch
from gonka_pipelines.protocol.records import BatchStatus, Host
from gonka_pipelines.protocol.rules import RuleSet
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
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain, work_item_size


@dataclass(frozen=True)
class MiningOrder:
    """What one host mines in the sprint (a work item holds one or a few: the same bytes wherever they run)."""

    public_key: str
    capacity: int
    sprint: SprintParams
    r_target: float
    late: bool
    """late_batches: after its budget each ML node mines one more model batch, submitted past the deadline and grace."""


MINED_SCHEMA = pa.schema([("host", pa.int32()), ("nonces", pa.list_(pa.int64())), ("distances", pa.list_(pa.float64())),
                          ("submitted_at", pa.float64()), ("late", pa.bool_())])
"""A work item's mined batches as they come back from wherever its hosts mined: one row per batch with hits, `host`
the position of the batch's host in the work item."""

def mine_hosts(compute: Compute, orders: tuple[MiningOrder, ...]) -> pa.Table:
    """Each host's honest batches, then its late ones (when its behaviour mines past the deadline), as MINED_SCHEMA rows."""
    batches = []
    for host, order in enumerate(orders):
        batches += [(host, *batch, False) for batch in _honest_batches(compute, order)]
        if order.late:
            batches += [(host, *batch, True) for batch in _late_batches(compute, order)]
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
    """Every mining host's honest and late batches by address, mined on the engine a host per work item, or a few
    past WORK_ITEMS hosts (work_item_size)."""
    miners = [host for host in env.hosts if mines_honestly(host)]
    orders = [MiningOrder(host.public_key, host.capacity, env.params.sprint, env.params.r_target, mines_past_the_deadline(host))
              for host in miners]
    size = work_item_size(len(orders))
    starts = range(0, len(orders), size)
    mined: dict[str, list[MinedBatch]] = {host.address: [] for host in miners}
    late: dict[str, list[MinedBatch]] = {host.address: [] for host in miners}
    for start, table in zip(starts, env.on_hosts(mine_hosts, [tuple(orders[start:start + size]) for start in starts])):
        columns = table.to_pydict()
        for host, nonces, distances, submitted_at, is_late in zip(*(columns[name] for name in MINED_SCHEMA.names)):
            (late if is_late else mined)[miners[start + host].address].append((nonces, distances, submitted_at))
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


@dataclass
class SprintVotes:
    """Every (host, validator) vote of a sprint as flat columns, host by host in claim order and each host's validators
    in committee order. Who votes, skips or lies is known before anything is recomputed; each vote then points at the
    sample its validator drew, a round's samples are voted on together once recomputed (validators that drew the
    same sample cast the same vote), and the records come out of one stable sort by validator."""

    validators: list[str]
    """The voting validators, by address: a vote's validator is its index here."""
    public_keys: list[str]
    bounds: np.ndarray
    """Host i's votes are [bounds[i], bounds[i + 1])."""
    host: np.ndarray
    """Per vote, the position of the host it checks in claim order."""
    validator: np.ndarray
    skipped: np.ndarray
    """The validator votes without recomputing: lazy, a cheat vouching for itself, or a colluder against its target."""
    lying: np.ndarray
    """A colluder voting its target's sprint invalid (every sampled nonce a mismatch)."""
    sample: np.ndarray
    """Per vote, the index of the sample its validator drew in the lists below."""
    sizes: list[int] = field(default_factory=list)
    sample_mismatches: list[int] = field(default_factory=list)
    sample_valid: list[bool] = field(default_factory=list)
    pending: list[np.ndarray | None] = field(default_factory=list)
    """The recomputed distances of each sample drawn since the last settle, in sample order (None when no validator
    that drew it recomputes: its votes are a skipper's or a liar's)."""

    @classmethod
    def asked(cls, env: EpochEnvironment, hosts: Sequence[str], committees: Mapping[str, Sequence[str]]) -> SprintVotes:
        """The votes of each host's committee members that send verdicts (silent validators send none), each marked
        skipped or lying by its validator's behaviour."""
        by_address = {h.address: h for h in env.hosts}
        validators = sorted(h.address for h in env.hosts if sends_verdicts(h))
        index = {address: position for position, address in enumerate(validators)}
        voters = [[index[v] for v in committees[host] if v in index] for host in hosts]
        bounds = np.fromiter(itertools.accumulate(map(len, voters), initial=0), np.int64, len(hosts) + 1)
        validator = np.fromiter(itertools.chain.from_iterable(voters), np.int32, int(bounds[-1]))
        host = np.repeat(np.arange(len(hosts), dtype=np.int32), np.diff(bounds))
        lazy = np.array([skips_recomputation(by_address[v]) for v in validators], bool)
        against = np.isin(np.arange(len(validators)), [index[v] for v in colluders(env.hosts) if v in index])
        target = collusion_target(env.hosts)
        targeted = np.array([h == target for h in hosts], bool)
        # A host's own vote counts under full validation, as in Gonka: an honest one checks itself like any other;
        # a cheat vouches for itself. A committee never holds the host it checks.
        self_voucher = np.array([index.get(h, -1) if vouches_for_itself(by_address[h]) else -1 for h in hosts], np.int32)
        lying = targeted[host] & against[validator]
        skipped = lazy[validator] | lying | (validator == self_voucher[host])
        return cls(validators, [env.keys[v].public_key for v in validators], bounds, host, validator, skipped, lying,
                   np.zeros(len(validator), np.int32))

    def of_host(self, position: int) -> slice:
        """Where a host's votes lie."""
        return slice(self._as_lists[0][position], self._as_lists[0][position + 1])

    def checkers(self, position: int) -> tuple[list[str], list[bool]]:
        """A host's voters' public keys and whether each skips recomputing, in committee order."""
        part = self.of_host(position)
        return self._as_lists[1][part], self._as_lists[2][part]

    @cached_property
    def _as_lists(self) -> tuple[list[int], list[str], list[bool]]:
        """bounds, each vote's validator's public key and skipped as Python lists, for the loop over hosts (a numpy
        slice or a list built a host cost more)."""
        return self.bounds.tolist(), [self.public_keys[v] for v in self.validator.tolist()], self.skipped.tolist()

    def drawn(self, sample: list[int], needed: list[int], distances: np.ndarray) -> int:
        """A new sample's index, its distances picked from those recomputed of `needed` (ascending) to be voted on at the
        next settle; None where some nonce of it was not recomputed (only skippers or liars drew it)."""
        if sample == needed:  # the usual case: the host's every nonce sampled, by a committee that recomputes
            picked: np.ndarray | None = distances
        else:
            recomputed = dict(zip(needed, distances.tolist()))
            picked = (np.array([recomputed[n] for n in sample], np.float64) if all(n in recomputed for n in sample)
                      else None)
        self.sizes.append(len(sample))
        self.pending.append(picked)
        return len(self.sizes) - 1

    def settle(self, rules: RuleSet) -> None:
        """Vote on the samples drawn since the last settle, the rules' fraud test on all of them at once ((0, valid) for
        one nobody recomputed), and let their distances go: a round's samples are held, never every host's."""
        sizes = np.array(self.sizes[len(self.sample_mismatches):], np.int64)
        recomputed = np.array([distances is not None for distances in self.pending], bool)
        mismatches, valid = np.zeros(len(sizes), np.int64), np.ones(len(sizes), bool)
        if recomputed.any():
            mismatches[recomputed], valid[recomputed] = rules.sprint_votes(
                np.concatenate([distances for distances in self.pending if distances is not None]), sizes[recomputed])
        self.sample_mismatches += mismatches.tolist()
        self.sample_valid += valid.tolist()
        self.pending.clear()

    def cast(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each vote's (sampled, mismatches, valid), every sample settled: its sample's vote, (0, valid) for a skipper,
        (sampled, invalid) for a liar."""
        if self.pending:
            raise RuntimeError("sprint votes cast before their last samples were settled")
        sampled = np.array(self.sizes, np.int32)[self.sample]
        mismatches = np.where(self.lying, sampled, np.where(self.skipped, 0, np.array(self.sample_mismatches, np.int32)[self.sample]))
        valid = ~self.lying & (self.skipped | np.array(self.sample_valid, bool)[self.sample])
        return sampled, mismatches.astype(np.int32), valid


def _plan(env: EpochEnvironment, votes: SprintVotes, position: int, nonces: list[int]) -> tuple[list[list[int]], list[int]]:
    """Each of a host's validators' sample (one list shared by all when every nonce is sampled), and the nonces those
    that recompute need, ascending."""
    keys, skipped = votes.checkers(position)
    samples = env.rules.validation_samples(keys, env.prev_hash, nonces)
    checking = [sample for sample, skip in zip(samples, skipped) if not skip] if any(skipped) else samples
    if checking and checking.count(checking[0]) == len(checking):  # one sample for all
        return samples, sorted(set(checking[0]))
    return samples, sorted({n for sample in checking for n in sample})


def _cast(votes: SprintVotes, position: int, samples: list[list[int]], needed: list[int], distances: np.ndarray) -> None:
    """Point each of a host's votes at its validator's sample, each distinct sample drawn once."""
    if samples and samples.count(samples[0]) == len(samples):  # one sample for all (equal samples cast equal votes)
        votes.sample[votes.of_host(position)] = votes.drawn(samples[0], needed, distances)
        return
    keys = [tuple(sample) for sample in samples]
    drawn: dict[tuple[int, ...], int] = {}
    for key, sample in zip(keys, samples):
        if key not in drawn:
            drawn[key] = votes.drawn(sample, needed, distances)
    votes.sample[votes.of_host(position)] = [drawn[key] for key in keys]


def run_sprint_validation(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> dict[str, int]:
    """Each validator asked to check a host (every validator with weight, or the host's committee) samples min(200, n)
    of its hits, recomputes and votes; a validator signs one record over all its votes (a silent validator sends none;
    colluders vote their target's sprint invalid without recomputing)."""
    epoch = env.epoch
    with open_chain() as store:
        claims = store.accepted_claims(epoch)
    hosts = [host for host, _ in claims]
    votes = SprintVotes.asked(env, hosts, env.rules.sprint_committees(env.prev_hash, hosts, env.weights))
    for start in range(0, len(claims), HOSTS_PER_ROUND):
        positions = range(start, min(start + HOSTS_PER_ROUND, len(claims)))
        plans = [_plan(env, votes, position, claims[position][1]) for position in positions]
        recomputations = env.on_hosts(recompute_distances, [(env.keys[hosts[position]].public_key, needed)
                                                            for position, (_, needed) in zip(positions, plans)])
        for position, (samples, needed), distances in zip(positions, plans, recomputations):
            _cast(votes, position, samples, needed, distances)
            log(f"sprint validation: {hosts[position][:14]}… {len(claims[position][1])} hits, {len(samples)} validators, "
                f"recomputed {len(needed)} nonces")
        votes.settle(env.rules)
    sampled, mismatches, valid = votes.cast()
    table = _signed_verdict_records(env, hosts, votes, (sampled, mismatches, ~votes.skipped, valid))
    with open_chain() as store:
        store.write_poc_verdicts(epoch, table)
    return {"verdicts": len(valid), "invalid_votes": int(np.count_nonzero(~valid)), "validators": table.num_rows}


def _signed_verdict_records(env: EpochEnvironment, hosts: Sequence[str], votes: SprintVotes,
                            fields: tuple[np.ndarray, ...]) -> pa.Table:
    """Each validator's votes as one signed record (VERDICT_FIELDS vectors in the order it checked), by address, as
    the columns of poc_verdict_sets: the votes' fields after hosts, stably sorted by validator; each record's message
    (poc_verdicts_body) written in C from those columns."""
    order = np.argsort(votes.validator, kind="stable")
    host_of = votes.host[order]
    counts = np.bincount(votes.validator, minlength=len(votes.validators))
    voted = np.flatnonzero(counts)
    validators = [votes.validators[v] for v in voted.tolist()]
    starts = pa.array(np.concatenate([[0], np.cumsum(counts[voted])]).astype(np.int32))
    columns = [pa.array(hosts, pa.string()).take(pa.array(host_of)),
               *(pa.array(values[order], kind) for values, kind in zip(fields, VERDICT_TYPES[1:]))]
    records = pa.table({"epoch": pa.array([env.epoch] * len(validators), pa.int64()), "validator": pa.array(validators, pa.string()),
                        **{name: pa.ListArray.from_arrays(starts, column) for name, column in zip(VERDICT_FIELDS, columns)}})
    body = list(poc_verdicts_body(0, "", [], [], [], []))
    messages = json_texts(message_prefix(env.chain_id, MessageKind.POC_VERDICT), records.select(body), body)
    signatures = sign_messages([(env.keys[validator], message) for validator, message in zip(validators, messages, strict=True)])
    return records.append_column("signature", pa.array(signatures, pa.string()))


def recompute_distances(compute: Compute, order: tuple[str, list[int]]) -> np.ndarray:
    """A work item of sprint validation: the distances of a host's (public key's) sampled nonces, recomputed, one per
    nonce (an engine's answer of another shape is refused: votes are read from it by position)."""
    public_key, nonces = order
    distances = np.asarray(compute.distances(public_key, nonces), dtype=np.float64)
    if distances.shape != (len(nonces),):
        raise ValueError(f"distances returned an array of shape {distances.shape} for {len(nonces)} nonces of host key "
                         f"{public_key[:16]}…")
    return distances


def run_epoch_weights(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> list[dict]:
    """Write the epoch's new weights with lineage to the accepted batches behind them."""
    with open_chain() as store:
        rows = env.rules.epoch_weights(store.weight_inputs(env.epoch), env.prev_hash, env.weights)
        store.write_epoch_weights(env.epoch, rows)
    log(f"weights: {sum(r['weight'] for r in rows)} in total, {sum(1 for r in rows if r['hits'] and not r['sprint_accepted'])} "
        "sprints rejected")
    return rows
