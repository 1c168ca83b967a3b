"""How simulated hosts behave: honestly, or as one of the adversaries of PROTOCOL section 7 that network.yaml names.

The stages ask these questions of every host, so a new adversary is a new Behaviour and an answer here. (A
garbled_output executor's other model is chosen by compute.engine.TorchCompute.served, which owns model seeds.)
"""

from __future__ import annotations

import random

from gonka_pipelines.protocol.crypto import hash_value
from gonka_pipelines.protocol.params import Behaviour, EpochParams
from gonka_pipelines.protocol.records import Host

MinedBatch = tuple[list[int], list[float], float]
"""(hit nonces, their distances, submission time in sprint seconds) of one batch a host submits."""


def mines_honestly(host: Host) -> bool:
    """Whether the host computes its sprint (fake_hits claims random nonces instead)."""
    return host.behaviour != Behaviour.FAKE_HITS


def vouches_for_itself(host: Host) -> bool:
    """Whether the host, validating its own sprint, votes valid without recomputing (it knows it cheated)."""
    return host.behaviour in (Behaviour.FAKE_HITS, Behaviour.INFLATED_HITS)


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
