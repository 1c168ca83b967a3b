"""Inference stages: seed commitments, task assignment and execution, sampled validation and the fail vote."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from gonka_pipelines.chain.hashing import hash_each
from gonka_pipelines.chain.tasks import EXECUTION_STAGE
from gonka_pipelines.compute.engine import Compute
from gonka_pipelines.compute.llm import GENERATION_SCHEMA, SCORE_SCHEMA
from gonka_pipelines.protocol.crypto import MessageKind, sha256_hex, sign_each
from gonka_pipelines.protocol.inference_validation import ComparisonReason, Comparisons, OutputBatch, ValidatorPool
from gonka_pipelines.protocol.messages import seed_commitment_body
from gonka_pipelines.protocol.records import ResultStatus, ShareRole, TaskOutcome, TransferKind
from gonka_pipelines.protocol.training import VersionScore, served_versions
from gonka_pipelines.simulation.behaviours import Voters, delivered_lengths, serves_tasks
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain, made_meanwhile, work_item_size
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
    commitments = [sha256_hex(bytes.fromhex(env.secret_seeds[host.address])) for host in env.hosts]
    signatures = sign_each(env.chain_id, MessageKind.SEED_COMMIT, [(env.keys[host.address], seed_commitment_body(env.epoch, commitment))
                                                                   for host, commitment in zip(env.hosts, commitments)])
    return [{"epoch": env.epoch, "host": host.address, "commitment": commitment, "signature": signature}
            for host, commitment, signature in zip(env.hosts, commitments, signatures)]


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


def generate_tasks(compute: Compute, order: GenerationOrder) -> pa.Table:
    """The executor's greedy generations with top-5 log-probs per position, as the engine returns them (columns)."""
    return _checked(compute.generate(order.model, order.version, order.executor, order.behaviour, list(order.prompts),
                                     order.max_tokens), GENERATION_SCHEMA, len(order.prompts), "generate")


def _checked(table: pa.Table, schema: pa.Schema, rows: int, call: str) -> pa.Table:
    """An engine's answer, refused unless it has the seam's columns and a row per request (an error names both)."""
    if not table.schema.equals(schema) or table.num_rows != rows:
        raise ValueError(f"engine {call} returned {table.num_rows} rows of {table.schema} for {rows} requests; "
                         f"expected {schema}")
    return table


RESULT_SCHEMA = {"task_id": pl.String(), "executor": pl.String(), "output_tokens": pl.List(pl.Int32()),
                 "top_ids": pl.List(pl.List(pl.Int32())), "top_logprobs": pl.List(pl.List(pl.Float64())),
                 "completion_tokens": pl.Int64(), "cost": pl.Int64(), "refund": pl.Int64()}
"""A task_results row as execution builds it (the stage adds epoch and status); token ids as int32, as the chain
stores them, so neither the insert nor the record leaves convert them again."""


GENERATION_GROUP = ["executor", "model", "runs_version", "max_tokens"]
"""Tasks generated as one batch (a GenerationOrder): one executor's tasks of one model version and max_tokens."""


def _grouped(frame: pl.DataFrame, keys: list[str]) -> tuple[pl.DataFrame, list[tuple[tuple, int, int]]]:
    """The frame with each group's rows together (groups in order of first appearance, rows in their order within,
    each row's original position as `row`), and each group's key with its row range: one sort, not a frame per group
    (10,000 hosts), and none where the groups lie together already."""
    frame = frame.with_row_index("row").with_columns(pl.col("row").min().over(keys).alias("group_first"))
    if not frame["group_first"].is_sorted():  # groups already together (one model version) are not gathered again
        frame = frame.sort("group_first", "row")
    bounds = frame.group_by("group_first", maintain_order=True).agg(*(pl.col(k).first() for k in keys), pl.len())
    ends = np.cumsum(bounds["len"].to_numpy()).tolist()
    return frame.drop("group_first"), [(key, end - size, end) for key, end, size in zip(bounds.select(keys).rows(), ends, bounds["len"])]


def _chunked_frame(table: pa.Table) -> pl.DataFrame:
    """A polars frame over the table's chunks as they lie: the small tables that generation (one per executor: 10,000)
    and re-scoring (WORK_ITEMS at most) return are not copied into one (rechunking touched about 500 MB afresh: 2.4 s of
    each stage at 10,000 hosts × 1,000,000 tasks, profiled)."""
    return cast(pl.DataFrame, pl.from_arrow(table, rechunk=False))


def _delivered(env: EpochEnvironment, running: pl.DataFrame, generations: list[pa.Table]) -> pl.DataFrame:
    """The running tasks' results (rows in the order of their generations) as columns, in one pass: what each executor
    returns of each generation (delivered_lengths), its cost (prompt + completion tokens) · price and the refund of
    the rest of the escrow."""
    generated = pa.concat_tables(generations)
    cost = (pl.col("prompt_tokens") + pl.col("completion_tokens")) * env.params.price_per_token
    return (_chunked_frame(generated).hstack(running.select("task_id", "executor", "prompt_tokens", "escrow"))
            .with_columns(delivered_lengths(env.hosts, pl.col("executor"),
                                            pl.col("tokens").list.len().cast(pl.Int64)).alias("completion_tokens"))
            .select("task_id", "executor", *(pl.col(source).list.head(pl.col("completion_tokens")).alias(column) for column, source in
                                             (("output_tokens", "tokens"), ("top_ids", "top_ids"), ("top_logprobs", "top_logprobs"))),
                    "completion_tokens", cost.alias("cost"), (pl.col("escrow") - cost).alias("refund"))
            .cast(RESULT_SCHEMA))  # type: ignore[arg-type]


def _by_executor(env: EpochEnvironment, running: pl.DataFrame, groups: list[tuple[tuple, int, int]],
                 generations: list[pa.Table]) -> pl.DataFrame:
    """The results (_delivered) by executor, then task id: generations are taken in order of their group's key, which
    leads with the executor, so the rows come out sorted when each executor ran one group (the usual case) and the
    million rows of nested lists need no sort; else they are sorted."""
    order = sorted(range(len(groups)), key=lambda group: groups[group][0])
    rows = np.concatenate([np.arange(groups[group][1], groups[group][2]) for group in order])
    results = _delivered(env, running.select("task_id", "executor", "prompt_tokens", "escrow")[rows],
                         [generations[group] for group in order])
    executor, task_id = pl.col("executor"), pl.col("task_id")
    in_order = results.select(((executor > executor.shift()) | (executor == executor.shift()) & (task_id > task_id.shift()))
                              .slice(1).all()).item()
    return results if in_order else results.sort("executor", "task_id")


REFUND_SCHEMA: dict[str, pl.DataType] = {"task_id": pl.String(), "refund": pl.Int64(), "status": pl.String(),
                                         "developer": pl.String()}


def _refunds(epoch: int, results: pl.DataFrame, tasks: pl.DataFrame, training_rows: list[dict[str, Any]],
             trainings: list[dict[str, Any]]) -> pa.Table:
    """The execution stage's refund transfers as columns (a million tasks an epoch, most refunding what they did not
    generate): every training and inference result with a refund pays it from its developer's escrow back to the
    balance, as REFUND when the task ran and EXPIRY_REFUND when it expired."""
    developer = {task["task_id"]: task["developer"] for task in trainings}
    trained = pl.DataFrame([(r["task_id"], r["refund"], str(r["status"]), developer[r["task_id"]])
                            for r in training_rows if r["refund"]], schema=REFUND_SCHEMA, orient="row")
    inferred = (results.filter(pl.col("refund") != 0).select("task_id", "refund", "status")
                .join(tasks.select("task_id", "developer"), on="task_id", how="left", maintain_order="left"))
    refunded = pl.concat([trained, inferred.cast(REFUND_SCHEMA)])  # type: ignore[arg-type]
    return refunded.select(
        pl.Series("transfer_id", hash_each("refund", refunded["task_id"]), dtype=pl.String),
        pl.lit(epoch, dtype=pl.Int64).alias("epoch"), pl.lit(EXECUTION_STAGE).alias("stage"), pl.col("developer").alias("account"),
        pl.col("refund").alias("balance_delta"), (-pl.col("refund")).alias("escrow_delta"),
        pl.when(pl.col("status") == ResultStatus.COMPLETED.value).then(pl.lit(TransferKind.REFUND.value))
        .otherwise(pl.lit(TransferKind.EXPIRY_REFUND.value)).alias("kind"),
        pl.col("task_id").alias("ref")).to_arrow()


def run_task_execution(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> dict[str, int]:
    """Commit seeds, assign each task ∝ weight, run it on its executor (within capacity), settle refunds; training tasks
    run too (stages/training.py). Results stay columns from the generations to the store."""
    epoch = env.epoch
    with open_chain() as store:
        tasks = _assigned_tasks(env, pl.DataFrame(store.epoch_tasks(epoch)).cast(TASK_SCHEMA))  # type: ignore[arg-type]
        trainings = store.epoch_trainings(epoch)
    tasks = env.with_runs_version(tasks)
    running, groups = _grouped(tasks.filter("runs"), GENERATION_GROUP)
    prompts = running["prompt"].to_list()
    orders = [GenerationOrder(model, version, executor, env.host[executor].behaviour, tuple(prompts[start:end]), max_tokens)
              for (executor, model, version, max_tokens), start, end in groups]
    generations = list(env.on_hosts(generate_tasks, orders))
    for (executor, model, version, max_tokens), start, end in groups:
        log(f"execution: {env.host[executor].name} ran {end - start} {model} tasks on version {version[:12]} "
            f"(max_tokens {max_tokens})")
    completed = _by_executor(env, running, groups, generations) if groups else pl.DataFrame(schema=RESULT_SCHEMA)
    expired = tasks.filter(~pl.col("runs")).select(
        "task_id", "executor", pl.lit([]).alias("output_tokens"), pl.lit([]).alias("top_ids"), pl.lit([]).alias("top_logprobs"),
        pl.lit(0).alias("completion_tokens"), pl.lit(0).alias("cost"), pl.col("escrow").alias("refund")).cast(RESULT_SCHEMA)  # type: ignore[arg-type]
    results = pl.concat([completed.with_columns(pl.lit(ResultStatus.COMPLETED.value).alias("status")),
                         expired.with_columns(pl.lit(ResultStatus.EXPIRED.value).alias("status"))]).with_columns(pl.lit(epoch).alias("epoch"))
    training_rows, training_bodies = execute_trainings(env, trainings)
    if trainings:
        log(f"training: {sum(r['status'] == ResultStatus.COMPLETED for r in training_rows)} of {len(trainings)} tasks ran")
    commitments, refunds = _seed_commitments(env), _refunds(epoch, results, tasks, training_rows, trainings)
    with open_chain() as store, made_meanwhile(lambda: env.sign_rows(MessageKind.RESULT, completed)
                                               + env.sign_records(MessageKind.TRAINING_RESULT, training_bodies)) as roots:
        store.write_task_results(epoch, commitments, results.to_arrow(), refunds, training_rows, roots)
    return {"completed": len(completed), "expired": len(expired),
            "trained": sum(r["status"] == ResultStatus.COMPLETED for r in training_rows),
            "training_expired": sum(r["status"] == ResultStatus.EXPIRED for r in training_rows)}


def run_task_validation(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> dict[str, int]:
    """Sample validators per task with their secret seeds, re-run, vote on failures, share fees, update status; record
    the new model versions and each model's served version after the epoch. Inference results, verdicts, outcomes and
    fee shares stay columns."""
    epoch, weights = env.epoch, env.weights
    voters = Voters.of(env.hosts)
    lazy_validators = voters.lazy
    with open_chain() as store:
        previous = store.host_states(epoch - 1)
        results = pl.DataFrame(store.completed_results(epoch))
        trainings = store.completed_trainings(epoch)
        traffic = max(store.task_count(epoch), store.task_count(epoch - 1))  # accepted tasks, this epoch or the last
        members = sorted(a for a, w in weights.items() if w > 0)
        pool = ValidatorPool(members, [env.secret_seeds[a] for a in members], [weights[a] for a in members],
                             [previous[a]["reputation"] for a in members])
        task_index, validator_index = env.rules.select_validations(  # one draw for both kinds of work
            pl.concat([results["executor"], pl.Series([r["executor"] for r in trainings], dtype=pl.String)]), pool, traffic)
        draws = _inference_draws(results, task_index, validator_index, members, voters)
        checked = _chunked_frame(store.checked_outputs(draws.filter(~pl.col("lazy"))["task_id"].unique(maintain_order=True).to_arrow()))
        history = _HostHistory(store.executor_loads(epoch), store.contradicted_poc_votes(epoch), store.miss_history(epoch))
        earlier_versions = store.version_scores(through_epoch=epoch - 1)
    honest = _honest_judgments(env, checked)
    verdicts = _verdicts(epoch, draws, honest)
    outcomes, shares = _outcomes_and_fees(env, results, verdicts, honest.select("task_id", "passed"), voters)
    trainer = TrainingValidator(env)
    training = task_index >= results.height
    training_draws = [(t - results.height, members[v]) for t, v in zip(task_index[training].tolist(), validator_index[training].tolist())
                      if members[v] not in voters.abstaining]
    checks, check_bodies = training_verdicts(env, trainings, training_draws, lazy_validators, trainer)
    training_checks = pl.DataFrame(checks, schema=CHECK_COLUMNS).select(*CHECK_COLUMNS)
    views = honest_views(trainings, checks, lazy_validators, trainer)
    training_outcomes, training_shares = _outcomes_and_fees(
        env, pl.DataFrame(trainings, schema=RESULT_COLUMNS).select(*RESULT_COLUMNS), training_checks,
        pl.DataFrame({"task_id": list(views), "passed": [view.passed for view in views.values()]}, schema=HONEST_COLUMNS), voters)
    versions = new_versions(env, trainings, training_outcomes.to_dicts(), trainer, {v.version for v in earlier_versions})
    served = served_versions([*earlier_versions, *(VersionScore(v["version"], v["model"], epoch, v["eval_loss"]) for v in versions)],
                             env.params.training.served_rule)
    all_outcomes = pl.concat([outcomes, training_outcomes])
    all_checks = pl.concat([verdicts.select(*CHECK_COLUMNS), training_checks])
    host_rows = _host_epochs(env, all_outcomes, all_checks, pool, validator_index.tolist(), previous, history)
    with open_chain() as store, made_meanwhile(lambda: env.sign_rows(MessageKind.TASK_VERDICT, _by_validator(verdicts, draws))
                                               + env.sign_records(MessageKind.TRAINING_VERDICT, check_bodies)) as roots:
        store.write_task_verdicts(epoch, verdicts.to_arrow(), roots, all_outcomes.to_arrow(),
                                  pl.concat([shares, training_shares]).to_arrow(), host_rows, checks, versions, served)
    invalidated_count = all_outcomes.filter(pl.col("outcome") == TaskOutcome.INVALIDATED.value).height
    log(f"validation: {verdicts.height} checks of {results.height} results, {len(checks)} of {len(trainings)} trainings, "
        f"{invalidated_count} invalidated, {len(versions)} new model version(s)")
    return {"validations": verdicts.height, "invalidated": invalidated_count, "training_validations": len(checks),
            "new_versions": len(versions)}


RESULT_COLUMNS = {"task_id": pl.String(), "executor": pl.String(), "cost": pl.Int64()}
"""What outcomes and fees read of a completed result (inference or training)."""
CHECK_COLUMNS = {"task_id": pl.String(), "validator": pl.String(), "passed": pl.Boolean()}
"""What outcomes, fees and host standings read of a verdict (inference or training)."""
HONEST_COLUMNS = {"task_id": pl.String(), "passed": pl.Boolean()}
"""Per validated task, whether an honest re-run passes it (the vote every honest host casts on a failure)."""


def _inference_draws(results: pl.DataFrame, task_index: np.ndarray, validator_index: np.ndarray, members: list[str],
                     voters: Voters) -> pl.DataFrame:
    """The drawn (inference task, validator) pairs that make a check, in task id then validator order, with the
    validator's rank among the sorted members and whether it is lazy (passes unseen) or lying (fails its collusion
    target). Abstaining validators are left out: drawn, they neither re-run nor vote, and their claims show the
    validation missing."""
    inference = task_index < results.height
    return (results.select("task_id", "executor")[task_index[inference]]
            .with_columns(pl.Series("validator", np.asarray(members, dtype=object)[validator_index[inference]], dtype=pl.String),
                          pl.Series("rank", validator_index[inference], dtype=pl.Int32))
            .filter(~pl.col("validator").is_in(sorted(voters.abstaining)))
            .with_columns(pl.col("validator").is_in(sorted(voters.lazy)).alias("lazy"),
                          voters.against_column(pl.col("validator"), pl.col("executor")).alias("lying")))


def _verdicts(epoch: int, draws: pl.DataFrame, honest: pl.DataFrame) -> pl.DataFrame:
    """One verdict per draw: a lazy validator passes unseen, a lying one fails, every other reports the honest
    judgment; recomputed says which re-ran."""
    lazy, lying = pl.col("lazy"), pl.col("lying")
    return draws.join(honest, on="task_id", how="left", maintain_order="left").select(
        pl.lit(epoch, dtype=pl.Int64).alias("epoch"), "task_id", "validator",
        pl.when(lazy).then(1.0).when(lying).then(0.0).otherwise(pl.col("similarity")).alias("similarity"),
        pl.when(lazy).then(True).when(lying).then(False).otherwise(pl.col("passed")).alias("passed"),
        pl.when(lazy).then(pl.lit(ComparisonReason.SIMILAR.value)).when(lying).then(pl.lit(ComparisonReason.DISSIMILAR.value))
        .otherwise(pl.col("reason")).alias("reason"),
        (~lazy & ~lying).alias("recomputed"))


def _by_validator(verdicts: pl.DataFrame, draws: pl.DataFrame) -> pl.DataFrame:
    """The verdicts (one per draw, in the draws' task id order) in validator then task id order, as they are signed: a
    stable sort by the validators' ranks (a sort of a million verdicts by both texts took 0.33 s, this 0.06 s)."""
    return verdicts.with_columns(draws["rank"]).sort("rank", maintain_order=True).drop("rank")


def _honest_judgments(env: EpochEnvironment, checked: pl.DataFrame) -> pl.DataFrame:
    """What an honest validator concludes of each checked output (task_id, passed, similarity, reason): one cut short of
    EOS and max_tokens fails unseen, the rest are re-run on the engine and judged in batches of one length. Outputs
    are copied only where some are set apart (a million rows of nested lists take about a second to gather)."""
    lengths = checked["output_tokens"].list.len()
    rerun = env.rules.needs_rescore(lengths.to_numpy(), checked["max_tokens"].to_numpy(),
                                    checked["output_tokens"].list.last().fill_null(-1).to_numpy(), env.compute.eos_token)
    parts = [_length_differs(checked.select("task_id").filter(pl.Series(~rerun)))]
    wanted = checked.with_columns(lengths.alias("positions"))
    wanted = wanted if rerun.all() else wanted.filter(pl.Series(rerun))
    rescored = _rescore(env, wanted)
    rescored_positions = rescored["top_ids"].list.len().to_numpy()
    wanted = wanted.with_columns(pl.Series("rescored", np.arange(wanted.height)))
    for group in _partitions(wanted, "positions"):
        rows = group["rescored"].to_numpy()
        same_length = rescored_positions[rows] == group["positions"][0]
        if not same_length.all():
            parts.append(_length_differs(group.select("task_id").filter(pl.Series(~same_length))))  # re-run of another length
            group, rows = group.filter(pl.Series(same_length)), rows[same_length]
        if group.height:
            comparisons = _judged(env, group, _taken(rescored, rows))
            parts.append(group.select("task_id", pl.Series("passed", comparisons.passed),
                                      pl.Series("similarity", comparisons.similarity, dtype=pl.Float64),
                                      pl.Series("reason", comparisons.reason, dtype=pl.String)))
    return pl.concat(parts).sort("task_id")


def _length_differs(outputs: pl.DataFrame) -> pl.DataFrame:
    """The verdict on outputs judged unseen or whose re-run has another length: failed, LENGTH_DIFFERS."""
    return outputs.select("task_id", pl.lit(False).alias("passed"), pl.lit(0.0).alias("similarity"),
                          pl.lit(ComparisonReason.LENGTH_DIFFERS.value).alias("reason"))


def _partitions(frame: pl.DataFrame, column: str) -> list[pl.DataFrame]:
    """The frame's rows by value of `column` (in order of first appearance); one value keeps the frame as it is, since
    gathering a million rows of nested lists costs about a second."""
    return [frame] if frame[column].n_unique() == 1 else frame.partition_by(column, maintain_order=True)


def _taken(frame: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
    """These rows of the frame, in this order: the frame itself when they are all of it in order (no gather)."""
    return frame if len(rows) == frame.height and np.array_equal(rows, np.arange(frame.height)) else frame[rows]


def _judged(env: EpochEnvironment, group: pl.DataFrame, rescored: pl.DataFrame) -> Comparisons:
    """The honest verdicts on outputs of one length beside their re-runs, judged piece by piece where the chunks of all
    five columns (tokens, then the executors' and the re-runs' top-k ids and log-probs) line up, each piece's values
    read in place as arrays: gathering a million outputs' nested lists into arrays first took about 0.4 s."""
    positions, first = int(group["positions"][0]), group["task_id"][0]
    columns = [_flat_chunks(group["output_tokens"], positions, "executors' output tokens", first, nested=False),
               *(_flat_chunks(rows, positions, whose, first) for rows, whose in (
                   (group["top_ids"], "executors'"), (group["top_logprobs"], "executors'"),
                   (rescored["top_ids"], "re-runs'"), (rescored["top_logprobs"], "re-runs'")))]
    bounds = sorted({0, *(end for chunks, _ in columns for end in itertools.accumulate(rows for rows, _ in chunks))})
    pieces = zip(*(_pieces(chunks, shape, bounds) for chunks, shape in columns))
    return Comparisons(*map(np.concatenate, zip(*(env.rules.judge_batch(OutputBatch(*piece)) for piece in pieces))))


def _flat_chunks(outputs: pl.Series, positions: int, whose: str, first_task: str,
                 nested: bool = True) -> tuple[list[tuple[int, np.ndarray]], tuple[int, ...]]:
    """A column of outputs (per output, `positions` tokens, or `positions` rows of k top-k values) as each chunk's
    output count and values in place, with the shape of one output's values, once every output is checked to hold
    `positions` rows of one width and no nulls; an error names what (`whose` top-k rows, or `whose` when not nested)
    and the first task of the batch."""
    what = f"{whose} top-k rows" if nested else whose
    chunks, widths = [], set()
    for chunk in outputs.get_chunks():
        rows = chunk.to_arrow()
        inner = rows.flatten()
        values = inner.flatten() if nested else inner
        if rows.null_count or inner.null_count or values.null_count:
            raise ValueError(f"{what} hold nulls among tasks {first_task}..")
        if len(rows) and set(pc.min_max(pc.list_value_length(rows)).as_py().values()) != {positions}:
            raise ValueError(f"{what} are not {positions} per output among tasks {first_task}..")
        if nested and len(inner):
            widths.update(pc.min_max(pc.list_value_length(inner)).as_py().values())
            if len(widths) > 1:
                raise ValueError(f"{what} differ in width among tasks {first_task}..")
        chunks.append((len(rows), values.to_numpy(zero_copy_only=True)))
    return chunks, ((positions, widths.pop() if widths else 0) if nested else (positions,))


def _pieces(chunks: list[tuple[int, np.ndarray]], shape: tuple[int, ...], bounds: list[int]) -> list[np.ndarray]:
    """A column's outputs cut at these bounds (every chunk's end among them): each piece a view of its chunk's values,
    shaped (outputs, *shape)."""
    pieces, chunk, start, size = [], 0, 0, math.prod(shape)
    for low, high in itertools.pairwise(bounds):
        while low >= start + chunks[chunk][0]:
            start, chunk = start + chunks[chunk][0], chunk + 1
        pieces.append(chunks[chunk][1][(low - start) * size:(high - start) * size].reshape(high - low, *shape))
    return pieces


@dataclass(frozen=True, eq=False)
class ScoringOrder:
    """A work item of validation: honest re-runs of one model version's results forcing the executors' tokens, as
    columns holding only these rows (_rows_copied)."""

    model: str
    version: str
    prompts: pa.Array
    outputs: pa.Array


SCORED_PER_ORDER = 32
"""Results re-scored per work item at least: enough to amortise a remote call, small enough to spread over a cluster."""


def score_results(compute: Compute, order: ScoringOrder) -> pa.Table:
    """Each result's top-5 ids and log-probs per position, from an honest re-run of its model version (columns)."""
    return _checked(compute.score(order.model, order.version, order.prompts, order.outputs), SCORE_SCHEMA, len(order.prompts),
                    "score")


def _rescore(env: EpochEnvironment, wanted: pl.DataFrame) -> pl.DataFrame:
    """The honest re-runs of these results (one per row: model, version, prompt, output tokens), run on the engine in
    orders of one model version (work_item_size: SCORED_PER_ORDER each, or more past WORK_ITEMS orders, one more
    per model version), as SCORE_SCHEMA columns in row order."""
    grouped, groups = _grouped(env.with_runs_version(wanted.select("model", "version", "prompt", "output_tokens")),
                               ["model", "runs_version"])
    prompts, outputs = grouped["prompt"].to_arrow(), grouped["output_tokens"].to_arrow()
    size, orders = work_item_size(len(prompts), SCORED_PER_ORDER), []
    for (model, version), first, end in groups:
        for start in range(first, end, size):
            stop = min(start + size, end)
            orders.append(ScoringOrder(model, version, _rows_copied(prompts, start, stop), _rows_copied(outputs, start, stop)))
    scored = _chunked_frame(pa.concat_tables([SCORE_SCHEMA.empty_table(), *env.on_hosts(score_results, orders)]))
    rows = grouped["row"]
    return scored if rows.is_sorted() else scored.with_columns(rows).sort("row").drop("row")


def _rows_copied(column: pa.Array, start: int, stop: int) -> pa.Array:
    """Rows [start, stop) of a column in buffers of their own: a slice pickles (to a cluster's worker) with the whole
    column's buffers. Turning 630,000 re-runs' prompts and outputs into Python lists took 0.5 s; the copies 0.08 s."""
    return pa.concat_arrays([column.slice(start, stop - start)])


def _outcomes_and_fees(env: EpochEnvironment, results: pl.DataFrame, checks: pl.DataFrame, honest: pl.DataFrame,
                       voters: Voters) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per task (results: RESULT_COLUMNS; checks: CHECK_COLUMNS; honest: HONEST_COLUMNS): a pass shares the fee equally
    among executor and passing validators (the remainder to the executor); a failure goes to a weighted vote."""
    epoch, weights = env.epoch, env.weights
    total_weight = sum(weights.values())
    counts = checks.group_by("task_id").agg(pl.len().cast(pl.Int64).alias("validations"),
                                            (~pl.col("passed")).sum().cast(pl.Int64).alias("failures"),
                                            pl.col("passed").sum().cast(pl.Int64).alias("passes"))
    table = results.join(counts, on="task_id", how="left", maintain_order="left").with_columns(
        pl.col("validations", "failures", "passes").fill_null(0))
    # every host with weight votes on a failure but the abstaining; honest ones by re-running (the shared honest view)
    failing = table.filter(pl.col("failures") > 0).join(honest, on="task_id", how="left", maintain_order="left")
    invalid_weight = dict(zip(failing["task_id"], voters.invalid_weights(
        weights, [(executor, bool(passes)) for executor, passes in failing.select("executor", "passed").iter_rows()])))
    invalidated = [task_id for task_id, weight in invalid_weight.items() if env.rules.task_invalidated(weight, total_weight)]
    outcomes = table.select(
        "task_id", pl.lit(epoch, dtype=pl.Int64).alias("epoch"), "executor", "validations", "failures",
        pl.col("task_id").replace_strict(invalid_weight, default=0, return_dtype=pl.Int64).alias("invalid_vote_weight"),
        pl.when(pl.col("task_id").is_in(invalidated)).then(pl.lit(TaskOutcome.INVALIDATED.value))
        .when(pl.col("validations") > 0).then(pl.lit(TaskOutcome.PASSED.value))
        .otherwise(pl.lit(TaskOutcome.UNVALIDATED.value)).alias("outcome"))
    paid = (table.filter(~pl.col("task_id").is_in(invalidated) & (pl.col("cost") != 0))
            .select("task_id", "executor", (pl.col("cost") // (pl.col("passes") + 1)).alias("share"),
                    (pl.col("cost") % (pl.col("passes") + 1)).alias("remainder")))
    executors = paid.select(pl.lit(epoch, dtype=pl.Int64).alias("epoch"), "task_id", pl.col("executor").alias("host"),
                            pl.lit(ShareRole.EXECUTOR.value).alias("role"), (pl.col("share") + pl.col("remainder")).alias("amount"))
    validators = checks.filter("passed").join(paid, on="task_id").select(
        pl.lit(epoch, dtype=pl.Int64).alias("epoch"), "task_id", pl.col("validator").alias("host"),
        pl.lit(ShareRole.VALIDATOR.value).alias("role"), pl.col("share").alias("amount"))
    return outcomes, pl.concat([executors, validators])


@dataclass(frozen=True)
class _HostHistory:
    """What the chain says of each host beyond this stage's rows: its load this epoch, contradicted sprint votes,
    and the miss rates of earlier epochs."""

    loads: list[dict]
    contradicted: list[dict]
    miss_rates: dict[str, list[float]]


def _host_epochs(env, outcomes: pl.DataFrame, checks: pl.DataFrame, pool, validator_index, previous, history: _HostHistory) -> list[dict]:
    """Per host: assigned/missed/validated/invalidated counts, the invalidation streak, status and reputation."""
    assigned = pl.DataFrame(history.loads, schema={"address": pl.String, "assigned": pl.Int64, "missed": pl.Int64})
    checked = (outcomes.select("task_id", "executor", "validations", "outcome")
               .filter(pl.col("validations") > 0).sort("task_id")
               .with_columns((pl.col("outcome") == TaskOutcome.INVALIDATED.value).alias("bad"),
                             pl.int_range(pl.len()).over("executor").alias("i")))
    streaks = checked.group_by("executor").agg(
        pl.len().alias("validated"), pl.col("bad").sum().alias("invalidated"),
        (pl.len() - 1 - pl.col("i").filter(~pl.col("bad")).max().fill_null(-1)).alias("trailing"))
    required = (pl.DataFrame({"address": [pool.ids[v] for v in validator_index]}, schema={"address": pl.String})
                .group_by("address").len("required_validations"))
    done = checks.group_by(pl.col("validator").alias("address")).len("done_validations")
    invalidated_tasks = outcomes.filter(pl.col("outcome") == TaskOutcome.INVALIDATED.value)["task_id"]
    contradicted = pl.concat([
        pl.DataFrame(history.contradicted, schema={"address": pl.String, "contradicted_votes": pl.Int64}),
        checks.filter(pl.col("passed") & pl.col("task_id").is_in(invalidated_tasks))
        .select(pl.col("validator").alias("address"), pl.lit(1, dtype=pl.Int64).alias("contradicted_votes"))]
    ).group_by("address").agg(pl.col("contradicted_votes").sum())
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
