"""Training tasks in the epoch (PROTOCOL section 4, "Training tasks"): executors fine-tune through accelerate and sign
their checkpoints and loss curve; validators drawn like inference validators re-run one checkpoint interval each and
score the new version on the held-out shard. The inference stages call these, so both kinds of work share executors'
capacity accounting, the validator draw, the fail vote, fee sharing and the host status machine."""

from __future__ import annotations

import hashlib
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from gonka_pipelines.compute.engine import Compute
from gonka_pipelines.compute.training import (
    CheckpointError,
    TrainingRun,
    TrainingSpec,
    read_checkpoint,
    weight_difference,
    write_checkpoint,
)
from gonka_pipelines.local.corpus import eval_bytes, manifest, training_bytes
from gonka_pipelines.protocol.messages import training_result_body, training_verdict_body
from gonka_pipelines.protocol.records import ResultStatus, TaskOutcome
from gonka_pipelines.simulation.behaviours import reported_losses, serves_tasks, skips_training, training_shards
from gonka_pipelines.stages.environment import EpochEnvironment

UNSCORED = -1.0
"""The eval loss a verdict reports when the re-run failed or the final checkpoint cannot be read: nothing to score."""


@dataclass(frozen=True)
class TrainingCheck:
    """An honest validator's view of one checkpoint interval: whether the re-run matched, and why not."""

    passed: bool
    reason: str


def _spec(env: EpochEnvironment, task: dict[str, Any]) -> TrainingSpec:
    return TrainingSpec(task["steps"], task["batch_size"], task["learning_rate"], task["seed"], env.params.training.checkpoint_every)


def execute_trainings(env: EpochEnvironment, tasks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, list[dict]]]:
    """Run each training task on its executor, in task id order while the executor's step budget (capacity ×
    training.max_steps; none while it is down) lasts; store the checkpoints by hash. The rest expire, their `refund`
    the whole escrow (the execution stage settles refunds of both kinds of task). Returns the training_results rows and
    the completed results' bodies by executor (what each executor's root signs)."""
    executors: dict[str, str] = {}
    for model in sorted({t["model"] for t in tasks}):
        ids = [t["task_id"] for t in tasks if t["model"] == model]
        executors |= dict(zip(ids, env.executors(model, ids)))
    budget = {h.address: h.capacity * env.params.training.max_steps if serves_tasks(h) else 0 for h in env.hosts}
    running = []
    for task in tasks:
        executor = executors[task["task_id"]]
        if executor and budget[executor] >= task["steps"]:
            budget[executor] -= task["steps"]
            running.append(task)
    training = [task for task in running if not skips_training(env.host[executors[task["task_id"]]])]
    runs = dict(zip((task["task_id"] for task in training),
                    env.on_hosts(train_task, [_order(env, task, executors[task["task_id"]]) for task in training])))
    runs |= {task["task_id"]: _skipped_run(env, task) for task in running if task["task_id"] not in runs}
    rows: list[dict[str, Any]] = []
    signed: dict[str, list[dict]] = {}
    for task in tasks:
        executor = executors[task["task_id"]]
        if task["task_id"] not in runs:
            rows.append({"task_id": task["task_id"], "epoch": env.epoch, "executor": executor, "status": ResultStatus.EXPIRED,
                         "version": "", "checkpoint_steps": [], "checkpoints": [], "losses": [], "tokens": 0, "cost": 0,
                         "refund": task["escrow"]})
            continue
        run = runs[task["task_id"]]
        for _, _, data in run.checkpoints:
            write_checkpoint(env.layout.checkpoints, data)
        body = training_result_body(task["task_id"], executor, run.final_hash, [s for s, _, _ in run.checkpoints],
                                    [h for _, h, _ in run.checkpoints], reported_losses(env.host[executor], run.losses),
                                    run.tokens)
        rows.append({**body, "epoch": env.epoch, "status": ResultStatus.COMPLETED, "cost": task["escrow"], "refund": 0})
        signed.setdefault(executor, []).append(body)
    return rows, signed


@dataclass(frozen=True)
class TrainingOrder:
    """A work item of execution: fine-tune a model version (base checkpoint bytes; None: genesis) on the data."""

    model: str
    base: bytes | None
    data: bytes
    spec: TrainingSpec


def train_task(compute: Compute, order: TrainingOrder) -> TrainingRun:
    """The executor's training run: losses, tokens seen and the checkpoints (bytes) it signs."""
    return compute.train(order.model, order.base, order.data, order.spec)


def _order(env: EpochEnvironment, task: dict[str, Any], executor: str) -> TrainingOrder:
    """What the executor trains: the base version on the shards it really uses."""
    shards = training_shards(env.host[executor], list(task["shards"]), [s.hash for s in manifest() if s.role == "eval"])
    return TrainingOrder(task["model"], read_checkpoint(env.layout.checkpoints, task["base_version"]), training_bytes(shards),
                         _spec(env, task))


def _skipped_run(env: EpochEnvironment, task: dict[str, Any]) -> TrainingRun:
    """A lazy trainer's claim: the base checkpoint at every checkpoint step and a made-up falling loss curve."""
    spec, base = _spec(env, task), read_checkpoint(env.layout.checkpoints, task["base_version"])
    steps = [*range(spec.checkpoint_every, spec.steps, spec.checkpoint_every), spec.steps]
    claimed = [5.0 - 0.1 * step for step in range(spec.steps)]
    return TrainingRun(claimed, task["tokens"], [(step, task["base_version"], base) for step in steps])


def interval_of(secret_seed: str, task_id: str, intervals: int) -> int:
    """Which checkpoint interval a validator re-runs: drawn from its secret seed and the task (hidden until it reveals)."""
    return int.from_bytes(hashlib.sha256(bytes.fromhex(secret_seed) + task_id.encode()).digest()[:8], "big") % intervals


@dataclass(frozen=True)
class ReplayOrder:
    """A work item of training validation: re-run steps first_step..last_step - 1 from a checkpoint."""

    model: str
    checkpoint: bytes
    data: bytes
    spec: TrainingSpec
    first_step: int
    last_step: int


def replay_interval(compute: Compute, order: ReplayOrder) -> TrainingRun | CheckpointError:
    """The interval's re-run, or the error when the checkpoint's bytes are not the run it claims to continue."""
    try:
        return compute.train(order.model, order.checkpoint, order.data, order.spec, order.first_step, order.last_step)
    except CheckpointError as error:
        return error


@dataclass(frozen=True)
class EvaluationOrder:
    """A work item of training validation: a new version's held-out loss."""

    model: str
    checkpoint: bytes
    data: bytes
    windows: int


def evaluate_version(compute: Compute, order: EvaluationOrder) -> float | CheckpointError:
    """The version's mean next-byte loss on the held-out windows, or the error when its checkpoint cannot be restored."""
    try:
        return compute.evaluate(order.model, order.checkpoint, order.data, order.windows)
    except CheckpointError as error:
        return error


class TrainingValidator:
    """Re-runs checkpoint intervals and scores versions, once per (task, interval): every honest validator derives the
    same bytes, so one honest computation stands for all of them."""

    def __init__(self, env: EpochEnvironment):
        self.env = env
        self.checks: dict[tuple[str, int], TrainingCheck] = {}
        self.scores: dict[str, float | str] = {}
        self.replays: dict[tuple[str, int], TrainingRun | CheckpointError] = {}
        self.evaluations: dict[str, float | CheckpointError] = {}

    def prefetch(self, wanted: list[tuple[dict[str, Any], int]]) -> None:
        """Run the re-runs and held-out scoring these checks will take on the engine, all at once (checks read them)."""
        replays: dict[tuple[str, int], ReplayOrder] = {}
        evaluations: dict[str, EvaluationOrder] = {}
        for result, interval in wanted:
            key = (result["task_id"], interval)
            if key not in self.checks and key not in replays:
                replay = self._replay_order(result, interval)
                if isinstance(replay, ReplayOrder):
                    replays[key] = replay
            if result["task_id"] not in self.scores and result["task_id"] not in evaluations:
                evaluation = self._evaluation_order(result)
                if isinstance(evaluation, EvaluationOrder):
                    evaluations[result["task_id"]] = evaluation
        self.replays |= dict(zip(replays, self.env.on_hosts(replay_interval, list(replays.values()))))
        self.evaluations |= dict(zip(evaluations, self.env.on_hosts(evaluate_version, list(evaluations.values()))))

    def bounds(self, result: dict[str, Any], interval: int) -> tuple[int, int]:
        steps = [0, *result["checkpoint_steps"]]
        return steps[interval], steps[interval + 1]

    def check(self, result: dict[str, Any], interval: int) -> TrainingCheck:
        """The interval's re-run; it also fails when the final version cannot be read (nothing to serve or score)."""
        key = (result["task_id"], interval)
        if key not in self.checks:
            check, final = self._rerun(result, interval), self._final(result)
            self.checks[key] = TrainingCheck(False, final) if check.passed and isinstance(final, str) else check
        return self.checks[key]

    def _replay_order(self, result: dict[str, Any], interval: int) -> ReplayOrder | TrainingCheck:
        """What re-running the interval takes, or the failed check when its starting checkpoint cannot be read."""
        first, last = self.bounds(result, interval)
        start = result["base_version"] if interval == 0 else result["checkpoints"][interval - 1]
        try:
            checkpoint = read_checkpoint(self.env.layout.checkpoints, start)
        except CheckpointError as error:
            return TrainingCheck(False, f"checkpoint_unreadable: {error}")
        return ReplayOrder(result["model"], checkpoint, training_bytes(result["shards"]), _spec(self.env, result), first, last)

    def _rerun(self, result: dict[str, Any], interval: int) -> TrainingCheck:
        order = self._replay_order(result, interval)
        if isinstance(order, TrainingCheck):
            return order
        first, last = order.first_step, order.last_step
        key = (result["task_id"], interval)
        replay = self.replays.pop(key) if key in self.replays else replay_interval(self.env.compute, order)
        if isinstance(replay, CheckpointError):  # intact bytes, but not the checkpoint this interval starts from
            start = result["base_version"] if interval == 0 else result["checkpoints"][interval - 1]
            return TrainingCheck(False, f"checkpoint_mismatch: the checkpoint signed for step {first} ({start[:12]}): {replay}")
        signed, losses = result["checkpoints"][interval], list(result["losses"][first:last])
        if self.env.compute.bit_exact:
            if replay.final_hash != signed:
                return TrainingCheck(False, f"checkpoint_mismatch: steps {first}..{last - 1} give {replay.final_hash[:12]}, "
                                            f"the executor signed {signed[:12]}")
            if replay.losses != losses:
                return TrainingCheck(False, f"loss_mismatch: steps {first}..{last - 1} give losses other than the signed curve")
            return TrainingCheck(True, "reproduced")
        return self._within_tolerance(replay.checkpoints[-1][2], signed, replay.losses, losses, first, last)

    def _within_tolerance(self, replayed: bytes, signed: str, replayed_losses: list[float], signed_losses: list[float],
                          first: int, last: int) -> TrainingCheck:
        """Where re-runs are not bit-identical (CUDA): the re-run's weights and losses must lie within the params'
        tolerances of what the executor signed."""
        training = self.env.params.training
        try:
            weights = weight_difference(replayed, read_checkpoint(self.env.layout.checkpoints, signed))
        except CheckpointError as error:
            return TrainingCheck(False, f"checkpoint_unreadable: {error}")
        if weights > training.weight_tolerance:
            return TrainingCheck(False, f"checkpoint_mismatch: steps {first}..{last - 1} give weights up to {weights:.3g} away "
                                        f"from {signed[:12]}'s (tolerance {training.weight_tolerance:g})")
        losses = max((abs(a - b) for a, b in zip(replayed_losses, signed_losses)), default=0.0)
        if len(replayed_losses) != len(signed_losses) or losses > training.loss_tolerance:
            return TrainingCheck(False, f"loss_mismatch: steps {first}..{last - 1} give losses up to {losses:.3g} away from "
                                        f"the signed curve (tolerance {training.loss_tolerance:g})")
        return TrainingCheck(True, "reproduced within tolerance")

    def _evaluation_order(self, result: dict[str, Any]) -> EvaluationOrder | str:
        """What scoring the new version takes, or why its checkpoint cannot be read."""
        try:
            final = read_checkpoint(self.env.layout.checkpoints, result["version"])
        except CheckpointError as error:
            return f"checkpoint_unreadable: final version: {error}"
        return EvaluationOrder(result["model"], final, eval_bytes(), self.env.params.training.eval_windows)

    def _final(self, result: dict[str, Any]) -> float | str:
        """The new version's held-out loss, or why its checkpoint cannot be scored."""
        task_id = result["task_id"]
        if task_id not in self.scores:
            order = self._evaluation_order(result)
            loss = (order if isinstance(order, str) else self.evaluations.pop(task_id) if task_id in self.evaluations
                    else evaluate_version(self.env.compute, order))
            self.scores[task_id] = f"checkpoint_unreadable: final version: {loss}" if isinstance(loss, CheckpointError) else loss
        return self.scores[task_id]

    def score(self, result: dict[str, Any]) -> float:
        """The new version's held-out loss (what the network's served-version rule compares); UNSCORED when unreadable."""
        final = self._final(result)
        return UNSCORED if isinstance(final, str) else final


def training_verdicts(env: EpochEnvironment, results: list[dict[str, Any]], draws: list[tuple[int, str]], lazy: Set[str],
                      validator: TrainingValidator) -> tuple[list[dict[str, Any]], dict[str, list[dict]]]:
    """One verdict per (training result, drawn validator): the interval it re-ran, pass or fail, the eval loss; and the
    verdicts' bodies by validator (what each validator's root signs). A lazy validator passes everything unchecked and
    reports the executor's last training loss as the eval loss."""
    intervals = [interval_of(env.secret_seeds[address], results[index]["task_id"], len(results[index]["checkpoint_steps"]))
                 for index, address in draws]
    validator.prefetch([(results[index], interval) for (index, address), interval in zip(draws, intervals) if address not in lazy])
    verdicts, signed = [], dict[str, list[dict]]()
    for (index, address), interval in zip(draws, intervals):
        result = results[index]
        first, last = validator.bounds(result, interval)
        if address in lazy:
            check, eval_loss = TrainingCheck(True, "reproduced"), result["losses"][-1]
        else:
            check = validator.check(result, interval)
            eval_loss = validator.score(result) if check.passed else UNSCORED
        body = training_verdict_body(env.epoch, result["task_id"], address, first, last, check.passed, eval_loss, check.reason)
        verdicts.append({**body, "recomputed": address not in lazy})
        signed.setdefault(address, []).append(body)
    return verdicts, signed


def honest_views(results: list[dict[str, Any]], verdicts: list[dict[str, Any]], lazy: Set[str],
                 validator: TrainingValidator) -> dict[str, TrainingCheck]:
    """Per validated training task, what an honest re-run of every interval its honest validators checked says: it
    fails when any of them failed (the vote every honest host then casts)."""
    by_task = {r["task_id"]: r for r in results}
    checks: dict[str, list[TrainingCheck]] = {}
    for verdict in verdicts:
        found = checks.setdefault(verdict["task_id"], [])
        if verdict["validator"] not in lazy:
            result = by_task[verdict["task_id"]]
            found.append(validator.check(result, [0, *result["checkpoint_steps"]].index(verdict["first_step"])))
    return {task_id: next((c for c in found if not c.passed), TrainingCheck(True, "reproduced")) for task_id, found in checks.items()}


def new_versions(env: EpochEnvironment, results: list[dict[str, Any]], outcomes: list[dict[str, Any]],
                 validator: TrainingValidator, known: set[str]) -> list[dict[str, Any]]:
    """The model versions the epoch's validated, passed training produced, scored on the held-out shard. Not registered:
    a version whose checkpoint cannot be read (only lazy validators passed it: nothing could serve it), and a version
    the chain already holds or an earlier task of the epoch produced (a lazy trainer's unchanged base that only lazy
    validators passed): its weights and first lineage are already on the chain."""
    passed = {o["task_id"] for o in outcomes if o["outcome"] == TaskOutcome.PASSED}
    fresh, seen = [], set(known)
    for result in results:
        if result["task_id"] in passed and result["version"] not in seen:
            seen.add(result["version"])
            fresh.append(result)
    scored = [(r, validator.score(r)) for r in fresh]
    return [{"version": r["version"], "epoch": env.epoch, "model": r["model"], "parent": r["base_version"],
             "task_id": r["task_id"], "executor": r["executor"], "shards": list(r["shards"]), "final_loss": r["losses"][-1],
             "eval_loss": score} for r, score in scored if score != UNSCORED]
