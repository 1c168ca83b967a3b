"""Inference stages: seed commitments, task assignment and execution, sampled validation and the fail vote."""

from __future__ import annotations

import polars as pl

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.assignment import assign_executors
from gonka_pipelines.protocol.crypto import KeyPair, MessageKind, hash_value, sha256_hex
from gonka_pipelines.protocol.host_status import host_statuses, reputation
from gonka_pipelines.protocol.inference_validation import (
    Comparison,
    ComparisonReason,
    ValidatorPool,
    invalidated,
    select_validations,
)
from gonka_pipelines.protocol.messages import (
    result_body,
    seed_commitment_body,
    task_verdict_body,
)
from gonka_pipelines.protocol.params import Behaviour
from gonka_pipelines.stages.environment import EpochContext, Log, epoch_context


def secret_seed(key: KeyPair, chain_id: str, epoch: int, block_hash: str) -> str:
    """A host's secret epoch seed: the hash of its signature over (epoch, block hash), reproducible only with its key."""
    return sha256_hex(bytes.fromhex(key.sign(chain_id, MessageKind.SEED_COMMIT, {"epoch": epoch, "secret_for": block_hash})))


def _seed_commitments(ctx: EpochContext, hosts: list[str]) -> list[dict]:
    """Each host commits to its secret epoch seed (the hash of it, signed) before any task is assigned."""
    rows = []
    for address in hosts:
        commitment = sha256_hex(bytes.fromhex(secret_seed(ctx.keys[address], ctx.chain_id, ctx.epoch, ctx.seed)))
        rows.append({"epoch": ctx.epoch, "host": address, "commitment": commitment,
                     "signature": ctx.keys[address].sign(ctx.chain_id, MessageKind.SEED_COMMIT, seed_commitment_body(ctx.epoch, commitment))})
    return rows


def _assigned_tasks(store: ChainStore, ctx: EpochContext, hosts: dict[str, dict]) -> pl.DataFrame:
    """The epoch's tasks with an executor drawn ∝ weight among the hosts serving the model ('' when none does),
    and whether it runs: an executor takes tasks in id order up to capacity · tasks_per_capacity; the rest expire."""
    tasks = pl.DataFrame(store.records(
        "SELECT task_id, developer, model, prompt, prompt_tokens, max_tokens, escrow FROM tasks WHERE epoch = ? ORDER BY task_id",
        [ctx.epoch]),
        schema={"task_id": pl.String, "developer": pl.String, "model": pl.String, "prompt": pl.String,
                "prompt_tokens": pl.Int64, "max_tokens": pl.Int64, "escrow": pl.Int64})
    executors = []
    for (model,), group in tasks.group_by(["model"], maintain_order=True):
        serving = [a for a in hosts if model in hosts[a]["models"] and ctx.weights.get(a, 0) > 0]
        chosen = (assign_executors(ctx.seed, group["task_id"].to_list(), serving, [ctx.weights[a] for a in serving])
                  if serving else [""] * len(group))
        executors.append(group.select("task_id").with_columns(pl.Series("executor", chosen, dtype=pl.String)))
    tasks = tasks.join(pl.concat(executors), on="task_id") if executors else tasks.with_columns(pl.lit("").alias("executor"))
    limit = ctx.params["tasks"]["tasks_per_capacity"]
    capacity = pl.DataFrame({"executor": list(hosts), "slots": [hosts[a]["capacity"] * limit for a in hosts]})
    return (tasks.sort("task_id").with_columns(pl.int_range(pl.len()).over("executor").alias("slot"))
            .join(capacity, on="executor", how="left").with_columns((pl.col("slot") < pl.col("slots").fill_null(0)).alias("runs")))


def run_task_execution(store: ChainStore, layout: DataLayout, epoch: int, log: Log = print,
                       compute: TorchCompute | None = None) -> dict:
    """Commit seeds, assign each task ∝ weight, run it on its executor (within capacity), settle refunds."""
    ctx = epoch_context(store, layout, epoch, compute)
    params, chain_id, keys = ctx.params, ctx.chain_id, ctx.keys
    hosts = {h["address"]: h for h in store.records("SELECT address, name, models, behaviour, capacity FROM hosts ORDER BY address")}
    commitments = _seed_commitments(ctx, sorted(hosts))
    tasks = _assigned_tasks(store, ctx, hosts)
    price = params["price_per_token"]
    results = []
    for (executor, model, max_tokens), group in tasks.filter("runs").group_by(["executor", "model", "max_tokens"], maintain_order=True):
        generations = ctx.compute.generate(model, executor, hosts[executor]["behaviour"], group["prompt"].to_list(), max_tokens)
        for task, generation in zip(group.iter_rows(named=True), generations):
            body = result_body(task["task_id"], executor, generation.tokens, generation.top_ids, generation.top_logprobs)
            cost = (task["prompt_tokens"] + len(generation.tokens)) * price
            results.append({**body, "epoch": epoch, "status": "completed", "completion_tokens": len(generation.tokens),
                            "cost": cost, "refund": task["escrow"] - cost,
                            "signature": keys[executor].sign(chain_id, MessageKind.RESULT, body)})
        log(f"execution: {hosts[executor]['name']} ran {len(group)} {model} tasks (max_tokens {max_tokens})")
    for task in tasks.filter(~pl.col("runs")).iter_rows(named=True):
        results.append({"task_id": task["task_id"], "epoch": epoch, "executor": task["executor"], "status": "expired",
                        "output_tokens": [], "top_ids": [], "top_logprobs": [], "completion_tokens": 0, "cost": 0,
                        "refund": task["escrow"], "signature": ""})
    developer = dict(zip(tasks["task_id"], tasks["developer"]))
    transfers = [{"transfer_id": hash_value(["refund", r["task_id"]]), "epoch": epoch, "stage": "task_results",
                  "account": developer[r["task_id"]], "balance_delta": r["refund"], "escrow_delta": -r["refund"],
                  "kind": "refund" if r["status"] == "completed" else "expiry_refund", "ref": r["task_id"]}
                 for r in results if r["refund"]]
    with store.transaction():
        store.delete_epoch_rows(epoch, ["seed_commitments", "task_results"], stage="task_results")
        store.insert("seed_commitments", commitments)
        store.insert("task_results", results)
        store.insert("transfers", transfers)
    return {"completed": sum(r["status"] == "completed" for r in results), "expired": sum(r["status"] == "expired" for r in results)}


def run_task_validation(store: ChainStore, layout: DataLayout, epoch: int, log: Log = print,
                        compute: TorchCompute | None = None) -> dict:
    """Sample validators per task with their secret seeds, re-run, vote on failures, share fees, update status."""
    ctx = epoch_context(store, layout, epoch, compute)
    params, seed, chain_id, keys, weights = ctx.params, ctx.seed, ctx.chain_id, ctx.keys, ctx.weights
    total_weight = sum(weights.values())
    behaviour = dict(store.query("SELECT address, behaviour FROM hosts"))
    previous = {r["address"]: r for r in store.records("SELECT * FROM host_states WHERE epoch = ?", [epoch - 1])}
    results = store.records(
        """SELECT r.task_id, r.executor, r.cost FROM task_results r
           WHERE r.epoch = ? AND r.status = 'completed' ORDER BY r.task_id""", [epoch])
    members = sorted(a for a, w in weights.items() if w > 0)
    pool = ValidatorPool(members, [secret_seed(keys[a], chain_id, epoch, seed) for a in members],
                         [weights[a] for a in members], [previous[a]["reputation"] for a in members])
    traffic = max(len(results), store.scalar("SELECT count(*) FROM tasks WHERE epoch = ?", [epoch - 1]))
    task_index, validator_index = select_validations([r["task_id"] for r in results], [r["executor"] for r in results], pool, traffic)
    threshold = params["validation"]["similarity_threshold"]
    checked = _checked_outputs(store, [results[t]["task_id"] for t in set(task_index.tolist())])
    honest: dict[str, Comparison] = {}
    verdicts = []
    for t, v in zip(task_index.tolist(), validator_index.tolist()):
        result, validator = checked[results[t]["task_id"]], members[v]
        lazy = behaviour[validator] == Behaviour.LAZY_VALIDATOR
        if not lazy and result["task_id"] not in honest:
            honest[result["task_id"]] = ctx.compute.judge(result["model"], result["prompt"], result, result["max_tokens"], threshold)
        comparison = Comparison(True, 1.0, ComparisonReason.SIMILAR) if lazy else honest[result["task_id"]]
        body = task_verdict_body(epoch, result["task_id"], validator, comparison.similarity, comparison.passed,
                                 str(comparison.reason))
        verdicts.append({**body, "recomputed": not lazy, "signature": keys[validator].sign(chain_id, MessageKind.TASK_VERDICT, body)})
    outcomes, shares = _outcomes_and_fees(epoch, results, verdicts, honest, weights, total_weight, behaviour)
    host_rows = _host_epochs(store, params, epoch, outcomes, verdicts, pool, task_index, validator_index, previous)
    with store.transaction():
        store.delete_epoch_rows(epoch, ["task_verdicts", "task_outcomes", "fee_shares", "host_epochs"], stage="task_verdicts")
        store.insert("task_verdicts", verdicts)
        store.insert("task_outcomes", outcomes)
        store.insert("fee_shares", shares)
        store.insert("host_epochs", host_rows)
    log(f"validation: {len(verdicts)} checks of {len(results)} results, {sum(o['outcome'] == 'invalidated' for o in outcomes)} invalidated")
    return {"validations": len(verdicts), "invalidated": sum(o["outcome"] == "invalidated" for o in outcomes)}


def _checked_outputs(store: ChainStore, task_ids: list[str]) -> dict[str, dict]:
    """Outputs, top-5 log-probs and prompts of the tasks some validator checks (only those: they are the bulk)."""
    return {row["task_id"]: row for row in store.records(
        """SELECT r.task_id, r.output_tokens, r.top_ids, r.top_logprobs, t.prompt, t.model, t.max_tokens
           FROM task_results r JOIN tasks t USING (task_id) WHERE list_contains(?, r.task_id)""", [task_ids])}


def _outcomes_and_fees(epoch, results, verdicts, honest, weights, total_weight, behaviour) -> tuple[list[dict], list[dict]]:
    """Per task: pass shares the fee equally among executor and passing validators; a failure goes to a weighted vote."""
    by_task: dict[str, list[dict]] = {}
    for verdict in verdicts:
        by_task.setdefault(verdict["task_id"], []).append(verdict)
    outcomes, shares = [], []
    for result in results:
        checks = by_task.get(result["task_id"], [])
        failures = sum(not c["passed"] for c in checks)
        invalid_weight = 0
        if failures:
            # Every host with weight votes: honest ones by re-running (the shared honest view), lazy ones and the executor "valid".
            invalid_weight = sum(w for a, w in weights.items() if a != result["executor"]
                                 and behaviour[a] != Behaviour.LAZY_VALIDATOR and not honest[result["task_id"]].passed)
        outcome = ("invalidated" if failures and invalidated(invalid_weight, total_weight)
                   else "passed" if checks else "unvalidated")
        outcomes.append({"task_id": result["task_id"], "epoch": epoch, "executor": result["executor"], "validations": len(checks),
                         "failures": failures, "invalid_vote_weight": invalid_weight, "outcome": outcome})
        if outcome == "invalidated" or not result["cost"]:
            continue
        earners = [(result["executor"], "executor")] + [(c["validator"], "validator") for c in checks if c["passed"]]
        share, remainder = divmod(result["cost"], len(earners))
        shares += [{"epoch": epoch, "task_id": result["task_id"], "host": host, "role": role,
                    "amount": share + (remainder if index == 0 else 0)} for index, (host, role) in enumerate(earners)]
    return outcomes, shares


def _host_epochs(store, params, epoch, outcomes, verdicts, pool, task_index, validator_index, previous) -> list[dict]:
    """Per host: assigned/missed/validated/invalidated counts, the invalidation streak, status and reputation."""
    validation = params["validation"]
    assigned = pl.DataFrame(store.records(
        "SELECT executor AS address, count(*) AS assigned, count(*) FILTER (status = 'expired') AS missed "
        "FROM task_results WHERE epoch = ? AND executor != '' GROUP BY executor", [epoch]),
        schema={"address": pl.String, "assigned": pl.Int64, "missed": pl.Int64})
    checked = (pl.DataFrame(outcomes, schema={"task_id": pl.String, "executor": pl.String, "validations": pl.Int64, "outcome": pl.String})
               .filter(pl.col("validations") > 0).sort("task_id")
               .with_columns((pl.col("outcome") == "invalidated").alias("bad"), pl.int_range(pl.len()).over("executor").alias("i")))
    streaks = checked.group_by("executor").agg(
        pl.len().alias("validated"), pl.col("bad").sum().alias("invalidated"),
        (pl.len() - 1 - pl.col("i").filter(~pl.col("bad")).max().fill_null(-1)).alias("trailing"))
    required = pl.DataFrame({"address": [pool.ids[v] for v in validator_index.tolist()]}, schema={"address": pl.String}).group_by("address").len("required_validations")
    done = pl.DataFrame({"address": [v["validator"] for v in verdicts]}, schema={"address": pl.String}).group_by("address").len("done_validations")
    invalidated_tasks = {o["task_id"] for o in outcomes if o["outcome"] == "invalidated"}
    contradicted = pl.DataFrame(store.records(
        """SELECT v.validator AS address, count(*) AS contradicted_votes FROM poc_verdicts v
           JOIN epoch_weights w ON w.address = v.host AND w.epoch = v.epoch
           WHERE v.epoch = ? AND v.valid AND NOT w.sprint_accepted GROUP BY v.validator""", [epoch])
        + [{"address": v["validator"], "contradicted_votes": 1} for v in verdicts if v["passed"] and v["task_id"] in invalidated_tasks],
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
    hosts = host_statuses(hosts.rename({"validated": "n_validated", "invalidated": "n_invalidated"}),
                          false_positive_rate=validation["false_positive_rate"], ramping_tasks=validation["ramping_tasks"],
                          invalid_streak_probability=validation["invalid_streak_probability"])
    weights = dict(zip(pool.ids, pool.weights))
    miss_history = {a: rates for a, rates in store.query(
        "SELECT address, list(missed / assigned ORDER BY epoch) FROM host_epochs WHERE epoch < ? AND assigned > 0 GROUP BY address", [epoch])}
    rows = []
    for row in hosts.sort("address").iter_rows(named=True):
        served = row["epochs_served"] + (1 if weights.get(row["address"], 0) > 0 else 0)
        rates = miss_history.get(row["address"], []) + ([row["missed"] / row["assigned"]] if row["assigned"] else [])
        rows.append({"epoch": epoch, "address": row["address"], "assigned": row["assigned"], "missed": row["missed"],
                     "validated": row["n_validated"], "invalidated": row["n_invalidated"],
                     "consecutive_invalidations": row["consecutive_invalidations"],
                     "required_validations": row["required_validations"], "done_validations": row["done_validations"],
                     "contradicted_votes": row["contradicted_votes"],
                     "status": str(row["status"]), "reputation": reputation(served, rates), "epochs_served": served})
    return rows
