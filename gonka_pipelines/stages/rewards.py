"""Rewards stage: mint R(e) under the cap, split it by final weights, pay work coins, slash, vest, with lineage."""

from __future__ import annotations

from typing import Any

import polars as pl

from gonka_pipelines.chain.hashing import hash_each
from gonka_pipelines.chain.rewards import STAGE
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.protocol.crypto import hash_value, sha256_hex
from gonka_pipelines.protocol.host_status import HostStatus
from gonka_pipelines.protocol.records import TaskOutcome, TransferKind
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain


def _claims(env: EpochEnvironment, commitments: dict[str, str], hosts: pl.DataFrame) -> pl.Series:
    """A host claims by revealing its seed: it must match the commitment and every required validation must be done.

    ours: a vote that contradicts the final decision (valid for a sprint rejected as fraud, pass for an invalidated
    task) shows the validation was not really done, so it counts as skipped.
    """
    return pl.Series("claimed", [
        commitments.get(a) == sha256_hex(bytes.fromhex(env.secret_seeds[a])) and done >= required and contradicted == 0
        for a, done, required, contradicted in hosts.select(
            "address", "done_validations", "required_validations", "contradicted_votes").iter_rows()])


def compute_rewards(env: EpochEnvironment, store: ChainStore) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Per host: status, final weight, reward share, work coins, withheld fees, slashes, claim and payout."""
    epoch, validation = env.epoch, env.params.validation
    hosts = pl.DataFrame(store.reward_inputs(epoch)).with_columns(pl.col(pl.Int32).cast(pl.Int64))
    invalid = pl.col("status") == HostStatus.INVALID.value
    hosts = hosts.with_columns(pl.when(invalid).then(0).otherwise(pl.col("sprint_weight")).alias("weight"),
                               _claims(env, store.seed_commitments(epoch), hosts))
    scheduled = env.rules.scheduled_reward()
    minted = env.rules.mint_amount(scheduled, store.minted_before(epoch)) if hosts["weight"].sum() > 0 else 0
    split = env.rules.split_reward(minted, hosts.select("address", "weight")).select("address", "reward")
    missed_too_much = (pl.col("assigned") > 0) & (pl.col("missed") / pl.col("assigned") > validation.miss_tolerance)
    hosts = (hosts.join(split, on="address", how="left").fill_null(0).with_columns(
        pl.when(invalid).then(0).otherwise(pl.col("fees")).alias("work_coins"),
        pl.when(invalid).then(pl.col("fees")).otherwise(0).alias("withheld"),
        env.rules.collateral_slash(pl.col("collateral"), invalid, missed_too_much).alias("slashed"),
        pl.lit(sum(hosts["weight"])).alias("total_weight"))
        .with_columns(pl.when(pl.col("claimed")).then(pl.col("reward") + pl.col("work_coins")).otherwise(0).alias("payout")))
    # Refused payouts are held one epoch, then burned (PROTOCOL section 5): this epoch burns the previous epoch's.
    forfeited = hosts.filter(~pl.col("claimed")).select(pl.col("reward") + pl.col("work_coins")).sum().item() or 0
    burned = int(hosts["withheld"].sum()) + int(hosts["slashed"].sum()) + store.unclaimed_held(epoch - 1)
    return hosts, {"epoch": epoch, "scheduled": scheduled, "minted": minted, "burned": burned, "unclaimed": int(forfeited)}


TRANSFER_SCHEMA = {"transfer_id": pl.String, "epoch": pl.Int64, "stage": pl.String, "account": pl.String, "kind": pl.String,
                   "ref": pl.String, "balance_delta": pl.Int64, "escrow_delta": pl.Int64, "locked_delta": pl.Int64,
                   "collateral_delta": pl.Int64}
"""The transfers table's columns, in the order the stage builds them."""


def _fee_transfers(epoch: int, settlements: pl.DataFrame) -> pl.DataFrame:
    """Each task's fee leaves its developer's escrow, back to the developer's balance when the task was invalidated: one
    transfer per task (a million an epoch), built as columns."""
    refunded = pl.col("outcome") == TaskOutcome.INVALIDATED.value
    fees = settlements.select(
        pl.col("developer").alias("account"), pl.col("task_id").alias("ref"),
        pl.when(refunded).then(pl.lit(TransferKind.FEE_REFUND.value)).otherwise(pl.lit(TransferKind.FEE.value)).alias("kind"),
        pl.when(refunded).then(pl.col("cost")).otherwise(0).alias("balance_delta"), (-pl.col("cost")).alias("escrow_delta"))
    ids = hash_each(fees["kind"], epoch, fees["account"], fees["ref"])
    return fees.with_columns(pl.Series("transfer_id", ids, pl.String), pl.lit(epoch, pl.Int64).alias("epoch"),
                             pl.lit(STAGE).alias("stage"), pl.lit(0, pl.Int64).alias("locked_delta"),
                             pl.lit(0, pl.Int64).alias("collateral_delta")).select(list(TRANSFER_SCHEMA))


def _transfers(env: EpochEnvironment, store: ChainStore, hosts: pl.DataFrame) -> tuple[pl.DataFrame, list[dict]]:
    """Fees leave developer escrow (back to the developer when invalidated); payouts (reward and work coins) vest;
    slashes burn collateral."""
    epoch = env.epoch
    rows: list[dict] = []

    def move(kind: TransferKind, account: str, ref: str, **deltas: int) -> None:
        rows.append({"transfer_id": hash_value([kind, epoch, account, ref]), "epoch": epoch, "stage": STAGE,
                     "account": account, "kind": kind.value, "ref": ref, "balance_delta": 0, "escrow_delta": 0,
                     "locked_delta": 0, "collateral_delta": 0} | {f"{k}_delta": v for k, v in deltas.items()})

    tranches = []
    for host in hosts.iter_rows(named=True):
        if host["claimed"] and host["work_coins"]:
            move(TransferKind.WORK_COINS, host["address"], f"epoch:{epoch}", locked=host["work_coins"])
        if host["claimed"] and host["reward"]:
            move(TransferKind.REWARD, host["address"], f"epoch:{epoch}", locked=host["reward"])
        if host["claimed"] and host["payout"]:
            tranches += [{"epoch": epoch, "address": host["address"], "unlock_epoch": epoch + i, "amount": amount}
                         for i, amount in enumerate(env.rules.vesting_tranches(host["payout"])) if amount]
        if host["slashed"]:
            move(TransferKind.SLASH, host["address"], f"epoch:{epoch}", collateral=-host["slashed"])
    due = [t for t in tranches if t["unlock_epoch"] == epoch] + store.vesting_due(epoch)
    for tranche in due:
        move(TransferKind.VESTING_UNLOCK, tranche["address"], f"granted:{tranche['epoch']}", locked=-tranche["amount"], balance=tranche["amount"])
    fees = _fee_transfers(epoch, pl.DataFrame(store.fee_settlements(epoch)))
    return pl.concat([fees, pl.DataFrame(rows, schema=TRANSFER_SCHEMA)]), tranches


def run_rewards(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Write rewards, emissions, vesting and transfers for the epoch, with lineage from each payout to its sources."""
    with open_chain() as store:
        hosts, emission = compute_rewards(env, store)
        transfers, tranches = _transfers(env, store, hosts)
        rewards = hosts.select("address", "status", "weight", "total_weight", "reward", "work_coins", "withheld", "slashed",
                               "claimed", "payout").with_columns(pl.lit(env.epoch).alias("epoch"))
        store.write_rewards(env.epoch, rewards.to_arrow(), emission, tranches, transfers.to_arrow())
    log(f"rewards: minted {emission['minted']:,}, burned {emission['burned']:,}, paid {int(hosts['payout'].sum()):,}")
    return hosts, emission
