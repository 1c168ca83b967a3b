"""How simulated hosts behave: honestly, or as one of the adversaries of PROTOCOL section 7 that network.yaml names.

The stages ask these questions of every host, so a new adversary is a new Behaviour and an answer here. (The
other model of a garbled_output or cheaper_model executor is chosen by compute.engine.TorchCompute.served, which owns
model seeds.)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from gonka_pipelines.protocol.crypto import hash_value
from gonka_pipelines.protocol.params import Behaviour, EpochParams
from gonka_pipelines.protocol.records import Host

MinedBatch = tuple[list[int], list[float], float]
"""(hit nonces, their distances, submission time in sprint seconds) of one batch a host submits."""


def mines_honestly(host: Host) -> bool:
    """Whether the host computes its sprint (fake_hits claims random nonces instead, copied_nonces another host's hits)."""
    return host.behaviour not in (Behaviour.FAKE_HITS, Behaviour.COPIED_NONCES)


def vouches_for_itself(host: Host) -> bool:
    """Whether the host, validating its own sprint, votes valid without recomputing (it knows it cheated)."""
    return host.behaviour in (Behaviour.FAKE_HITS, Behaviour.INFLATED_HITS, Behaviour.COPIED_NONCES)


def _largest(hosts: Sequence[Host]) -> Host | None:
    """The host of the largest capacity (ties: name order); None for none."""
    return min(hosts, key=lambda h: (-h.capacity, h.name)) if hosts else None


def copied_batches(host: Host, hosts: Sequence[Host], mined: dict[str, list[MinedBatch]]) -> list[MinedBatch] | None:
    """copied_nonces: the batches of the largest other host that mines, claimed as the host's own (none when no other
    host mines); None for every other behaviour."""
    if host.behaviour != Behaviour.COPIED_NONCES:
        return None
    source = _largest([h for h in hosts if h.address != host.address and h.address in mined])
    return mined[source.address] if source else []


def resubmitted(host: Host, mined: list[MinedBatch]) -> list[MinedBatch]:
    """reused_nonces: every honestly mined batch, then each of them again (claiming its hits twice)."""
    return [*mined, *mined] if host.behaviour == Behaviour.REUSED_NONCES else mined


def mines_past_the_deadline(host: Host) -> bool:
    """late_batches: after its budget the host keeps mining and submits those hits after the deadline and its grace."""
    return host.behaviour == Behaviour.LATE_BATCHES


def sends_verdicts(host: Host) -> bool:
    """Whether the host votes at all as a validator (silent_validator sends no sprint verdicts and does no validations)."""
    return host.behaviour != Behaviour.SILENT_VALIDATOR


def does_required_validations(host: Host) -> bool:
    """Whether the host re-runs the tasks its secret seed drew it to validate (skipped_validations and silent_validator
    do none of them, saving the compute)."""
    return host.behaviour not in (Behaviour.SKIPPED_VALIDATIONS, Behaviour.SILENT_VALIDATOR)


def collusion_target(hosts: Sequence[Host]) -> str | None:
    """colluding: the honest host every colluder votes against (the largest; ties: name order), None without colluders."""
    if not any(h.behaviour == Behaviour.COLLUDING for h in hosts):
        return None
    target = _largest([h for h in hosts if h.behaviour == Behaviour.HONEST])
    return target.address if target else None


def colluders(hosts: Sequence[Host]) -> set[str]:
    """The addresses that vote invalid on everything the collusion target does."""
    return {h.address for h in hosts if h.behaviour == Behaviour.COLLUDING}


def delivered_lengths(hosts: Sequence[Host], executor: pl.Expr, generated: pl.Expr) -> pl.Expr:
    """How many of its generated tokens each executor returns, over columns of executors' addresses and generated
    lengths: all, or (truncated_output) the first half of them (at least one)."""
    truncating = sorted(h.address for h in hosts if h.behaviour == Behaviour.TRUNCATED_OUTPUT)
    return (pl.when(executor.is_in(truncating) & (generated > 0)).then(pl.max_horizontal(generated // 2, pl.lit(1)))
            .otherwise(generated))


@dataclass(frozen=True)
class Voters:
    """How hosts vote on a task that failed a check: by re-running it (honest), "valid" unseen (lazy), not at all
    (silent validators and skippers: abstaining), or "invalid" whenever the collusion target executed it (colluders)."""

    lazy: frozenset[str]
    abstaining: frozenset[str]
    colluders: frozenset[str]
    target: str | None

    @classmethod
    def of(cls, hosts: Sequence[Host]) -> Voters:
        return cls(frozenset(h.address for h in hosts if skips_recomputation(h)),
                   frozenset(h.address for h in hosts if not does_required_validations(h)), frozenset(colluders(hosts)),
                   collusion_target(hosts))

    def against(self, voter: str, executor: str) -> bool:
        """Whether the voter calls the executor's work invalid whatever it is (a colluder facing its target)."""
        return executor == self.target and voter in self.colluders

    def against_column(self, voter: pl.Expr, executor: pl.Expr) -> pl.Expr:
        """against() over a frame's voter and executor columns."""
        return (executor == pl.lit(self.target, dtype=pl.String)).fill_null(False) & voter.is_in(sorted(self.colluders))

    def votes_invalid(self, voter: str, executor: str, honestly_passes: bool) -> bool:
        """Whether the voter votes "invalid" on a failed task of this executor: against it whatever the work (a colluder
        facing its target), or because an honest re-run fails it and the voter re-runs (not lazy). Abstaining voters
        and the executor itself cast no vote at all (invalid_weights)."""
        return self.against(voter, executor) or (voter not in self.lazy and not honestly_passes)

    def invalid_weights(self, weights: dict[str, int], failed: Sequence[tuple[str, bool]]) -> list[int]:
        """The weight of the "invalid" votes on each failed task (its executor, whether an honest re-run passes it): every
        host with weight but the executor and the abstaining votes (votes_invalid). A vote depends on the voter only
        through its kind (lazy, colluder), so each kind's weight is summed once and a task costs four terms, not a pass
        over every host (10,000 hosts and tens of thousands of failed tasks in an adversarial simulation)."""
        kinds: dict[tuple[bool, bool], tuple[str, int]] = {}  # (lazy, colluder) -> (a voter of that kind, their weight)
        for voter, weight in weights.items():
            if voter not in self.abstaining:
                kind = (voter in self.lazy, voter in self.colluders)
                first, summed = kinds.get(kind, (voter, 0))
                kinds[kind] = (first, summed + weight)
        totals = []
        for executor, honestly_passes in failed:
            total = sum(summed for voter, summed in kinds.values() if self.votes_invalid(voter, executor, honestly_passes))
            if executor not in self.abstaining and self.votes_invalid(executor, executor, honestly_passes):
                total -= weights.get(executor, 0)
            totals.append(total)
        return totals


INFLATED_SHARE = 0.1
"""inflated_hits: the share of its claimed hits that are fake (it mines honestly, then pads its hits by this much)."""


def inflated_batches(host: Host, prev_hash: str, params: EpochParams, mined: list[MinedBatch]) -> list[MinedBatch]:
    """inflated_hits: the honestly mined batches plus one batch of random nonces claimed as hits, so that INFLATED_SHARE
    of all its claimed hits are fake (at least one)."""
    if host.behaviour != Behaviour.INFLATED_HITS:
        return mined
    honest = sum(len(nonces) for nonces, _, _ in mined)
    fakes = max(1, round(honest * INFLATED_SHARE / (1 - INFLATED_SHARE)))
    rng = random.Random(hash_value(["inflated_hits", prev_hash, host.address]))
    budget = host.capacity * params.sprint.nonces_per_capacity  # honest nonces are below this; the fakes lie above it
    nonces = sorted(rng.sample(range(budget, budget * 1000), fakes))
    distances = [rng.uniform(0.5 * params.r_target, params.r_target) for _ in nonces]
    return [*mined, (nonces, distances, params.sprint.duration_seconds)]


def serves_tasks(host: Host) -> bool:
    """Whether the host executes the tasks assigned to it (downtime: it is offline, and every one of them expires)."""
    return host.behaviour != Behaviour.DOWNTIME


def skips_recomputation(host: Host) -> bool:
    """Whether the host, as a validator, votes "valid" without recomputing anything (lazy_validator)."""
    return host.behaviour == Behaviour.LAZY_VALIDATOR


def fake_batches(host: Host, prev_hash: str, params: EpochParams) -> list[MinedBatch]:
    """fake_hits: claim random nonces as hits without computing; also resend one and send one after the deadline."""
    sprint = params.sprint
    rng = random.Random(hash_value(["fake_hits", prev_hash, host.address]))
    budget = host.capacity * sprint.nonces_per_capacity
    nonces = sorted(rng.sample(range(budget * 1000), budget))
    distances = [rng.uniform(0.5 * params.r_target, params.r_target) for _ in nonces]
    half, late = budget // 2, sprint.duration_seconds + sprint.late_grace_seconds + 1
    return [(nonces[:half], distances[:half], sprint.duration_seconds / 2),
            (nonces[half:], distances[half:], sprint.duration_seconds),
            (nonces[:1], distances[:1], sprint.duration_seconds),
            ([budget * 1000 + 1], [distances[0]], late)]


FABRICATED_LOSS_FACTOR = 0.9
"""fabricated_loss: the loss curve a cheat signs is its real one times this (a better-looking run)."""


def skips_training(host: Host) -> bool:
    """lazy_trainer: signs its base version as every checkpoint, with a made-up falling loss curve, and trains nothing."""
    return host.behaviour == Behaviour.LAZY_TRAINER


def reported_losses(host: Host, losses: list[float]) -> list[float]:
    """The loss curve a host signs for a run: the real one, or (fabricated_loss) a better-looking one."""
    return [loss * FABRICATED_LOSS_FACTOR for loss in losses] if host.behaviour == Behaviour.FABRICATED_LOSS else losses


def training_shards(host: Host, named: list[str], held_out: list[str]) -> list[str]:
    """The shards a host really trains on: the named ones, or (wrong_shards) the held-out ones instead."""
    return held_out if host.behaviour == Behaviour.WRONG_SHARDS else named
