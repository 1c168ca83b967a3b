"""Inference stages: seed commitments, task assignment and execution, sampled validation and the fail vote."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import accumulate
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from gonka_pipelines.chain.record_roots import RESULT_BODY, record_leaves
from gonka_pipelines.chain.tasks import EXECUTION_STAGE
from gonka_pipelines.compute.engine import Compute
from gonka_pipelines.protocol.crypto import MessageKind, hash_value, sha256_hex
from gonka_pipelines.protocol.inference_validation import Comparison, ComparisonReason, ValidatorPool
from gonka_pipelines.protocol.messages import seed_commitment_body, task_verdict_body
from gonka_pipelines.protocol.records import ResultStatus, ShareRole, TaskOutcome, TransferKind
from gonka_pipelines.protocol.training import VersionScore, served_versions
from gonka_pipelines.simulation.behaviours import Voters, delivered_length, serves_tasks
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain
from gonka_pipelines.stages.training import (
    TrainingValidator,
    execute_trainings,
    honest_views,
    new_versions,
    training_verdicts,
)

TASK_SCHEMA: dict[str, pl.DataType] = {
    "task_id": pl.String(), "developer": pl.String(), "model": pl.String(), "version": pl.String(), "prompt": pl.String(),
    "prompt_tokens": pl.Int64(),
    "max_tokens": pl.Int64(), "escrow": pl.Int64()}


def _seed_commitments(env: EpochEnvironment) -> list[dict[str, Any]]:
    """Each host commits to its secret epoch seed (the hash of it, signed) before any task is assigned."""
    rows = []
    for host in env.hosts:
        commitment = sha256_hex(bytes.fromhex(env.secret_seeds[host.address]))
        rows.append({"epoch": env.epoch, "host": host.address, "commitment": commitment,
                     "signature": env.keys[host.address].sign(env.chain_id, MessageKind.SEED_COMMIT,
                                                              seed_commitment_body(env.epoch, commitment))})
    return rows


def _assigned_tasks(env: EpochEnvironment, tasks: pl.DataFrame) -> pl.DataFrame:
    """The epoch's tasks with an executor drawn ∝ weight among the hosts serving the model ('' when none does),
    and whether it runs: an executor takes tasks in id order up to capacity · tasks_per_capacity (none while it is
    down); the rest expire."""
    executors = []
    for (model,), group in tasks.group_by(["model"], maintain_order=True):
        chosen = env.executors(model, group["task_id"].to_list())
        executors.append(group.select("task_id").with_columns(pl.Series("executor", chosen, dtype=pl.String)))
    tasks = tasks.join(pl.concat(executors), on="task_id") if executors else tasks.with_columns(pl.lit("").alias("executor"))
    limit = env.params.tasks.tasks_per_capacity
    capacity = pl.DataFrame({"executor": [h.address for h in env.hosts],
                             "slots": [h.capacity * limit if serves_tasks(h) else 0 for h in env.hosts]})
    return (tasks.sort("task_id").with_columns(pl.int_range(pl.len()).over("executor").alias("slot"))
            .join(capacity, on="executor", how="left").with_columns((pl.col("slot") < pl.col("slots").fill_null(0)).alias("runs")))


@dataclass(frozen=True)
class GenerationOrder:
    """A work item of execution: one executor's tasks of one model version and max_tokens, generated as one batch."""

    model: str
    version: str
    executor: str
    behaviour: str
    prompts: tuple[str, ...]
    max_tokens: int


GENERATION_SCHEMA = pa.schema([("tokens", pa.list_(pa.int64())), ("top_ids", pa.list_(pa.list_(pa.int64()))),
                               ("top_logprobs", pa.list_(pa.list_(pa.float64())))])
"""Generations as they come back from wherever they ran: one row per prompt, in prompt order."""


def generate_tasks(compute: Compute, order: GenerationOrder) -> pa.Table:
    """The executor's greedy generations with top-5 log-probs per position (GENERATION_SCHEMA rows)."""
    generations = compute.generate(order.model, order.version, order.executor, order.behaviour, list(order.prompts),
                                   order.max_tokens)
    return pa.Table.from_pylist([{"tokens": g.tokens, "top_ids": g.top_ids, "top_logprobs": g.top_logprobs}
                                 for g in generations], schema=GENERATION_SCHEMA)


RESULT_SCHEMA = {"task_id": pl.String(), "executor": pl.String(), "output_tokens": pl.List(pl.Int64()),
                 "top_ids": pl.List(pl.List(pl.Int64())), "top_logprobs": pl.List(pl.List(pl.Float64())),
                 "completion_tokens": pl.Int64(), "cost": pl.Int64(), "refund": pl.Int64()}
"""A task_results row as execution builds it (the stage adds epoch and status)."""


def _delivered(env: EpochEnvironment, executor: str, group: pl.DataFrame, generations: pa.Table) -> pl.DataFrame:
    """One group's results as columns: what the executor returns of each generation (delivered_length), its cost
    (prompt + completion tokens) · price and the refund of the rest of the escrow."""
    lengths = pa.compute.list_value_length(generations.column("tokens")).to_pylist()
    delivered = [delivered_length(env.host[executor], length) for length in lengths]
    cost = (pl.col("prompt_tokens") + pl.col("completion_tokens")) * env.params.price_per_token
    return (pl.from_arrow(generations).hstack(group.select("task_id", "prompt_tokens", "escrow"))  # type: ignore[union-attr]
            .with_columns(pl.Series("completion_tokens", delivered, dtype=pl.Int64), pl.lit(executor).alias("executor"))
            .select("task_id", "executor", *(pl.col(source).list.head(pl.col("completion_tokens")).alias(column) for column, source in
                                             (("output_tokens", "tokens"), ("top_ids", "top_ids"), ("top_logprobs", "top_logprobs"))),
                    "completion_tokens", cost.alias("cost"), (pl.col("escrow") - cost).alias("refund"))
            .cast(RESULT_SCHEMA))  # type: ignore[arg-type]


def run_task_execution(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> dict[str, int]:
    """Commit seeds, assign each task ∝ weight, run it on its executor (within capacity), settle refunds; training tasks
    run too (stages/training.py). Results stay columns from the generations to the store."""
    epoch = env.epoch
    with open_chain() as store:
        tasks = _assigned_tasks(env, pl.DataFrame(store.epoch_tasks(epoch)).cast(TASK_SCHEMA))  # type: ignore[arg-type]
        trainings = store.epoch_trainings(epoch)
    tasks = tasks.with_columns(pl.Series("runs_version", [env.version_of(t) for t in tasks.select("model", "version").to_dicts()],
                                         dtype=pl.String))
    groups = [(key, group) for key, group in tasks.filter("runs").group_by(
        ["executor", "model", "runs_version", "max_tokens"], maintain_order=True)]
    orders = [GenerationOrder(model, version, executor, env.host[executor].behaviour, tuple(group["prompt"].to_list()), max_tokens)
              for (executor, model, version, max_tokens), group in groups]
    parts = [pl.DataFrame(schema=RESULT_SCHEMA)]
    for ((executor, model, version, max_tokens), group), generations in zip(groups, env.on_hosts(generate_tasks, orders)):
        parts.append(_delivered(env, executor, group, generations))
        log(f"execution: {env.host[executor].name} ran {len(group)} {model} tasks on version {version[:12]} "
            f"(max_tokens {max_tokens})")
    completed = pl.concat(parts).sort("executor", "task_id")
    expired = tasks.filter(~pl.col("runs")).select(
        "task_id", "executor", pl.lit([]).alias("output_tokens"), pl.lit([]).alias("top_ids"), pl.lit([]).alias("top_logprobs"),
        pl.lit(0).alias("completion_tokens"), pl.lit(0).alias("cost"), pl.col("escrow").alias("refund")).cast(RESULT_SCHEMA)  # type: ignore[arg-type]
    results = pl.concat([completed.with_columns(pl.lit(ResultStatus.COMPLETED.value).alias("status")),
                         expired.with_columns(pl.lit(ResultStatus.EXPIRED.value).alias("status"))]).with_columns(pl.lit(epoch).alias("epoch"))
    leaves = record_leaves(completed.select(*RESULT_BODY).to_arrow(), env.chain_id, MessageKind.RESULT)
    signed = dict(zip(completed["executor"].unique(maintain_order=True), _split(leaves, completed["executor"])))
    training_rows, training_bodies = execute_trainings(env, trainings)
    if trainings:
        log(f"training: {sum(r['status'] == ResultStatus.COMPLETED for r in training_rows)} of {len(trainings)} tasks ran")
    developer = dict(zip(tasks["task_id"], tasks["developer"])) | {t["task_id"]: t["developer"] for t in trainings}
    refunded = [(r["task_id"], r["refund"], r["status"]) for r in training_rows if r["refund"]]
    refunded += results.filter(pl.col("refund") != 0).select("task_id", "refund", "status").rows()
    refunds = [{"transfer_id": hash_value(["refund", task_id]), "epoch": epoch, "stage": EXECUTION_STAGE,
                "account": developer[task_id], "balance_delta": refund, "escrow_delta": -refund,
                "kind": TransferKind.REFUND if status == ResultStatus.COMPLETED else TransferKind.EXPIRY_REFUND, "ref": task_id}
               for task_id, refund, status in refunded]
    with open_chain() as store:
        store.write_task_results(epoch, _seed_commitments(env), results.to_arrow(), refunds, training_rows,
                                 env.sign_leaves(MessageKind.RESULT, signed)
                                 + env.sign_records(MessageKind.TRAINING_RESULT, training_bodies))
    return {"completed": len(completed), "expired": len(expired),
            "trained": sum(r["status"] == ResultStatus.COMPLETED for r in training_rows),
            "training_expired": sum(r["status"] == ResultStatus.EXPIRED for r in training_rows)}


def _split(items: list, keys: pl.Series) -> list[list]:
    """items cut into runs of equal consecutive keys (keys sorted), in order."""
    counts = keys.rle().struct.field("len").to_list()
    ends = list(accumulate(counts))
    return [items[end - count:end] for count, end in zip(counts, ends)]


def run_task_validation(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> dict[str, int]:
    """Sample validators per task with their secret seeds, re-run, vote on failures, share fees, update status; record
    the new model versions and each model's served version after the epoch."""
    epoch, weights = env.epoch, env.weights
    voters = Voters.of(env.hosts)
    lazy_validators = voters.lazy
    with open_chain() as store:
        previous = store.host_states(epoch - 1)
        results = store.completed_results(epoch)
        trainings = store.completed_trainings(epoch)
        traffic = max(store.task_count(epoch), store.task_count(epoch - 1))  # accepted tasks, this epoch or the last
        members = sorted(a for a, w in weights.items() if w > 0)
        pool = ValidatorPool(members, [env.secret_seeds[a] for a in members], [weights[a] for a in members],
                             [previous[a]["reputation"] for a in members])
        everything = results + trainings  # one draw for both kinds of work
        task_index, validator_index = env.rules.select_validations([r["task_id"] for r in everything],
                                                                   [r["executor"] for r in everything], pool, traffic)
        checked = store.checked_outputs([results[t]["task_id"] for t in set(task_index.tolist()) if t < len(results)])
        history = _HostHistory(store.executor_loads(epoch), store.contradicted_poc_votes(epoch), store.miss_history(epoch))
        earlier_versions = store.version_scores(through_epoch=epoch - 1)
    honest: dict[str, Comparison] = {}
    verdicts, signed = [], dict[str, list[dict]]()
    draws = list(zip(task_index.tolist(), validator_index.tolist()))
    rescored = _rescore(env, [checked[results[t]["task_id"]] for t, v in draws if t < len(results)
                              and members[v] not in voters.abstaining and members[v] not in lazy_validators])
    for t, v in draws:
        if t >= len(results):
            continue
        result, validator = checked[results[t]["task_id"]], members[v]
        if validator in voters.abstaining:
            continue  # drawn, but it neither re-runs nor votes: its claim will show the validation missing
        lazy, lying = validator in lazy_validators, voters.against(validator, results[t]["executor"])
        if not lazy and result["task_id"] not in honest:
            honest[result["task_id"]] = env.rules.judge(
                result["output_tokens"], result["max_tokens"], env.compute.eos_token, (result["top_ids"], result["top_logprobs"]),
                rescore=partial(rescored.__getitem__, result["task_id"]))
        comparison = (Comparison(True, 1.0, ComparisonReason.SIMILAR) if lazy
                      else Comparison(False, 0.0, ComparisonReason.DISSIMILAR) if lying else honest[result["task_id"]])
        body = task_verdict_body(epoch, result["task_id"], validator, comparison.similarity, comparison.passed,
                                 str(comparison.reason))
        verdicts.append({**body, "recomputed": not lazy and not lying})
        signed.setdefault(validator, []).append(body)
    outcomes, shares = _outcomes_and_fees(env, results, verdicts, honest, voters)
    trainer = TrainingValidator(env)
    checks, check_bodies = training_verdicts(env, trainings, [(t - len(results), members[v]) for t, v in draws
                                                if t >= len(results) and members[v] not in voters.abstaining],
                               lazy_validators, trainer)
    training_outcomes, training_shares = _outcomes_and_fees(env, trainings, checks, honest_views(trainings, checks, lazy_validators, trainer),
                                                            voters)
    versions = new_versions(env, trainings, training_outcomes, trainer, {v.version for v in earlier_versions})
    served = served_versions([*earlier_versions, *(VersionScore(v["version"], v["model"], epoch, v["eval_loss"]) for v in versions)],
                             env.params.training.served_rule)
    host_rows = _host_epochs(env, outcomes + training_outcomes, verdicts + checks, pool, validator_index.tolist(), previous, history)
    with open_chain() as store:
        store.write_task_verdicts(epoch, verdicts, env.sign_records(MessageKind.TASK_VERDICT, signed)
                                  + env.sign_records(MessageKind.TRAINING_VERDICT, check_bodies), outcomes + training_outcomes,
                                  shares + training_shares, host_rows, checks, versions, served)
    invalidated_count = sum(o["outcome"] == TaskOutcome.INVALIDATED for o in outcomes + training_outcomes)
    log(f"validation: {len(verdicts)} checks of {len(results)} results, {len(checks)} of {len(trainings)} trainings, "
        f"{invalidated_count} invalidated, {len(versions)} new model version(s)")
    return {"validations": len(verdicts), "invalidated": invalidated_count, "training_validations": len(checks),
            "new_versions": len(versions)}


@dataclass(frozen=True)
class ScoringOrder:
    """A work item of validation: honest re-runs of results forcing the executors' tokens, one per task."""

    tasks: tuple[tuple[str, str, str, tuple[int, ...]], ...]
    """(model, version, prompt, output tokens) of each result."""


SCORED_PER_ORDER = 32
"""Results re-scored per work item: enough to amortise a remote call, small enough to spread over a cluster."""


def score_results(compute: Compute, order: ScoringOrder) -> list[tuple[list[list[int]], list[list[float]]]]:
    """Each result's top-5 ids and log-probs per position, from an honest re-run of its model version."""
    return [compute.score(model, version, prompt, list(output)) for model, version, prompt, output in order.tasks]


def _rescore(env: EpochEnvironment, wanted: list[dict]) -> dict[str, tuple[list[list[int]], list[list[float]]]]:
    """The honest re-runs an honest validator's judgment of these results takes (once per task; outputs that fail
    unseen take none), run on the engine: by task id."""
    eos, unique = env.compute.eos_token, dict[str, tuple[str, str, str, tuple[int, ...]]]()
    for result in wanted:
        if env.rules.needs_rescore(result["output_tokens"], result["max_tokens"], eos):
            unique.setdefault(result["task_id"], (result["model"], env.version_of(result), result["prompt"],
                                                  tuple(result["output_tokens"])))
    ids, tasks = list(unique), list(unique.values())
    orders = [ScoringOrder(tuple(tasks[i:i + SCORED_PER_ORDER])) for i in range(0, len(tasks), SCORED_PER_ORDER)]
    return dict(zip(ids, (scores for batch in env.on_hosts(score_results, orders) for scores in batch)))


def _outcomes_and_fees(env, results, verdicts, honest, voters: Voters) -> tuple[list[dict], list[dict]]:
    """Per task: pass shares the fee equally among executor and passing validators; a failure goes to a weighted vote."""
    epoch, weights = env.epoch, env.weights
    total_weight = sum(weights.values())
    by_task: dict[str, list[dict]] = {}
    for verdict in verdicts:
        by_task.setdefault(verdict["task_id"], []).append(verdict)
    outcomes, shares = [], []
    for result in results:
        checks = by_task.get(result["task_id"], [])
        failures = sum(not c["passed"] for c in checks)
        invalid_weight = 0
        if failures:  # every host with weight votes but the abstaining; honest ones by re-running (the shared honest view)
            invalid_weight = voters.invalid_weight(weights, result["executor"], honest[result["task_id"]].passed)
        outcome = (TaskOutcome.INVALIDATED if failures and env.rules.task_invalidated(invalid_weight, total_weight)
                   else TaskOutcome.PASSED if checks else TaskOutcome.UNVALIDATED).value
        outcomes.append({"task_id": result["task_id"], "epoch": epoch, "executor": result["executor"], "validations": len(checks),
                         "failures": failures, "invalid_vote_weight": invalid_weight, "outcome": outcome})
        if outcome == TaskOutcome.INVALIDATED or not result["cost"]:
            continue
        earners = [(result["executor"], ShareRole.EXECUTOR)] + [(c["validator"], ShareRole.VALIDATOR) for c in checks if c["passed"]]
        share, remainder = divmod(result["cost"], len(earners))
        shares += [{"epoch": epoch, "task_id": result["task_id"], "host": host, "role": role,
                    "amount": share + (remainder if index == 0 else 0)} for index, (host, role) in enumerate(earners)]
    return outcomes, shares


@dataclass(frozen=True)
class _HostHistory:
    """What the chain says of each host beyond this stage's rows: its load this epoch, contradicted sprint votes,
    and the miss rates of earlier epochs."""

    loads: list[dict]
    contradicted: list[dict]
    miss_rates: dict[str, list[float]]


def _host_epochs(env, outcomes, verdicts, pool, validator_index, previous, history: _HostHistory) -> list[dict]:
    """Per host: assigned/missed/validated/invalidated counts, the invalidation streak, status and reputation."""
    assigned = pl.DataFrame(history.loads, schema={"address": pl.String, "assigned": pl.Int64, "missed": pl.Int64})
    checked = (pl.DataFrame(outcomes, schema={"task_id": pl.String, "executor": pl.String, "validations": pl.Int64, "outcome": pl.String})
               .filter(pl.col("validations") > 0).sort("task_id")
               .with_columns((pl.col("outcome") == TaskOutcome.INVALIDATED.value).alias("bad"),
                             pl.int_range(pl.len()).over("executor").alias("i")))
    streaks = checked.group_by("executor").agg(
        pl.len().alias("validated"), pl.col("bad").sum().alias("invalidated"),
        (pl.len() - 1 - pl.col("i").filter(~pl.col("bad")).max().fill_null(-1)).alias("trailing"))
    required = (pl.DataFrame({"address": [pool.ids[v] for v in validator_index]}, schema={"address": pl.String})
                .group_by("address").len("required_validations"))
    done = (pl.DataFrame({"address": [v["validator"] for v in verdicts]}, schema={"address": pl.String})
            .group_by("address").len("done_validations"))
    invalidated_tasks = {o["task_id"] for o in outcomes if o["outcome"] == TaskOutcome.INVALIDATED}
    contradicted = pl.DataFrame(
        history.contradicted + [{"address": v["validator"], "contradicted_votes": 1} for v in verdicts
                                if v["passed"] and v["task_id"] in invalidated_tasks],
        schema={"address": pl.String, "contradicted_votes": pl.Int64}).group_by("address").agg(pl.col("contradicted_votes").sum())
    # An INVALID epoch is the penalty; the streak starts over in the next one (else a host without tasks stays INVALID).
    prior = pl.DataFrame([{"address": a, "epochs_served": r["epochs_served"],
                           "prior_streak": 0 if r["status"] == "INVALID" else r["consecutive_invalidations"]}
                          for a, r in previous.items()])
    hosts = (prior.join(assigned, on="address", how="left").join(streaks.rename({"executor": "address"}), on="address", how="left")
             .join(required, on="address", how="left").join(done, on="address", how="left")
             .join(contradicted, on="address", how="left").fill_null(0)
             .with_columns(pl.when(pl.col("validated") == 0).then(pl.col("prior_streak"))
                           .when(pl.col("trailing") == pl.col("validated"))
                           .then(pl.col("prior_streak") + pl.col("validated")).otherwise(pl.col("trailing"))
                           .alias("consecutive_invalidations")))
    hosts = env.rules.host_statuses(hosts.rename({"validated": "n_validated", "invalidated": "n_invalidated"})
                                    .with_columns((pl.col("assigned") - pl.col("missed")).alias("n_executed")))
    weights = dict(zip(pool.ids, pool.weights))
    rows = []
    for row in hosts.sort("address").iter_rows(named=True):
        served = row["epochs_served"] + (1 if weights.get(row["address"], 0) > 0 else 0)
        rates = history.miss_rates.get(row["address"], []) + ([row["missed"] / row["assigned"]] if row["assigned"] else [])
        rows.append({"epoch": env.epoch, "address": row["address"], "assigned": row["assigned"], "missed": row["missed"],
                     "validated": row["n_validated"], "invalidated": row["n_invalidated"],
                     "consecutive_invalidations": row["consecutive_invalidations"],
                     "required_validations": row["required_validations"], "done_validations": row["done_validations"],
                     "contradicted_votes": row["contradicted_votes"],
                     "status": str(row["status"]), "reputation": env.rules.reputation(served, rates), "epochs_served": served})
    return rows
