"""Rewards stage: mint R(e) under the cap, split it by final weights, pay work coins, slash, vest, with lineage."""

from __future__ import annotations

import polars as pl

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import hash_value, sha256_hex
from gonka_pipelines.protocol.host_status import HostStatus
from gonka_pipelines.protocol.rewards import (
    epoch_reward,
    mint_amount,
    split_reward_frame,
    vesting_tranches,
)
from gonka_pipelines.stages.environment import host_keys
from gonka_pipelines.stages.inference import secret_seed

STAGE = "rewards"


def _claims(store: ChainStore, layout: DataLayout, epoch: int, hosts: pl.DataFrame) -> pl.Series:
    """A host claims by revealing its seed: it must match the commitment and every required validation must be done.

    ours: a vote that contradicts the final decision (valid for a sprint rejected as fraud, pass for an invalidated
    task) shows the validation was not really done, so it counts as skipped.
    """
    keys, chain_id, seed = host_keys(store, layout), store.chain_id, store.epoch_seed(epoch)
    commitments = dict(store.query("SELECT host, commitment FROM seed_commitments WHERE epoch = ?", [epoch]))
    return pl.Series("claimed", [
        commitments.get(a) == sha256_hex(bytes.fromhex(secret_seed(keys[a], chain_id, epoch, seed)))
        and done >= required and contradicted == 0
        for a, done, required, contradicted in hosts.select(
            "address", "done_validations", "required_validations", "contradicted_votes").iter_rows()])


def compute_rewards(store: ChainStore, layout: DataLayout, epoch: int) -> tuple[pl.DataFrame, dict]:
    """Per host: status, final weight, reward share, work coins, withheld fees, slashes, claim and payout."""
    params = store.epoch_params(epoch)
    emission, validation = params["emission"], params["validation"]
    hosts = pl.DataFrame(store.records(
        """SELECT w.address, h.status, h.done_validations, h.required_validations, h.contradicted_votes, h.assigned, h.missed, w.weight AS sprint_weight,
                  s.collateral, coalesce(f.fees, 0) AS fees
           FROM epoch_weights w JOIN host_epochs h ON h.address = w.address AND h.epoch = w.epoch
           JOIN account_states s ON s.address = w.address AND s.epoch = w.epoch - 1
           LEFT JOIN (SELECT host, sum(amount) fees FROM fee_shares WHERE epoch = ? GROUP BY host) f ON f.host = w.address
           WHERE w.epoch = ? ORDER BY w.address""", [epoch, epoch]))
    invalid = pl.col("status") == HostStatus.INVALID.value
    hosts = hosts.with_columns(pl.when(invalid).then(0).otherwise(pl.col("sprint_weight")).alias("weight"), _claims(store, layout, epoch, hosts))
    scheduled = epoch_reward(epoch, emission["initial_reward"], emission["decay_rate"])
    minted_before = store.scalar("SELECT coalesce(sum(minted), 0) FROM emissions WHERE epoch < ?", [epoch])
    minted = mint_amount(scheduled, minted_before, emission["supply_cap"]) if hosts["weight"].sum() > 0 else 0
    split = split_reward_frame(minted, hosts.select("address", "weight")).select("address", "reward")
    missed_too_much = (pl.col("assigned") > 0) & (pl.col("missed") / pl.col("assigned") > validation["miss_tolerance"])
    slash_fraction = (pl.when(invalid).then(validation["invalid_slash_fraction"]).when(missed_too_much)
                      .then(validation["miss_slash_fraction"]).otherwise(0.0))
    hosts = (hosts.join(split, on="address", how="left").fill_null(0).with_columns(
        pl.when(invalid).then(0).otherwise(pl.col("fees")).alias("work_coins"),
        pl.when(invalid).then(pl.col("fees")).otherwise(0).alias("withheld"),
        (pl.col("collateral") * slash_fraction).floor().cast(pl.Int64).alias("slashed"),
        pl.lit(sum(hosts["weight"])).alias("total_weight"))
        .with_columns(pl.when(pl.col("claimed")).then(pl.col("reward") + pl.col("work_coins")).otherwise(0).alias("payout")))
    forfeited = hosts.filter(~pl.col("claimed")).select(pl.col("reward") + pl.col("work_coins")).sum().item() or 0
    burned = int(hosts["withheld"].sum() + hosts["slashed"].sum() + forfeited)
    return hosts, {"epoch": epoch, "scheduled": scheduled, "minted": minted, "burned": burned}


def _transfers(store: ChainStore, epoch: int, hosts: pl.DataFrame, vesting_epochs: int) -> tuple[list[dict], list[dict]]:
    """Fees leave developer escrow (back to the developer when invalidated); payouts vest; slashes burn collateral."""
    rows: list[dict] = []

    def move(kind: str, account: str, ref: str, **deltas: int) -> None:
        rows.append({"transfer_id": hash_value([kind, epoch, account, ref]), "epoch": epoch, "stage": STAGE,
                     "account": account, "kind": kind, "ref": ref, "balance_delta": 0, "escrow_delta": 0,
                     "locked_delta": 0, "collateral_delta": 0} | {f"{k}_delta": v for k, v in deltas.items()})

    for task_id, developer, cost, outcome in store.query(
            """SELECT r.task_id, t.developer, r.cost, o.outcome FROM task_results r JOIN tasks t USING (task_id)
               JOIN task_outcomes o USING (task_id) WHERE r.epoch = ? AND r.cost > 0 ORDER BY r.task_id""", [epoch]):
        move("fee_refund" if outcome == "invalidated" else "fee", developer, task_id, escrow=-cost,
             balance=cost if outcome == "invalidated" else 0)
    tranches = []
    for host in hosts.iter_rows(named=True):
        if host["claimed"] and host["work_coins"]:
            move("work_coins", host["address"], f"epoch:{epoch}", balance=host["work_coins"])
        if host["claimed"] and host["reward"]:
            move("reward", host["address"], f"epoch:{epoch}", locked=host["reward"])
            tranches += [{"epoch": epoch, "address": host["address"], "unlock_epoch": epoch + i, "amount": amount}
                         for i, amount in enumerate(vesting_tranches(host["reward"], vesting_epochs)) if amount]
        if host["slashed"]:
            move("slash", host["address"], f"epoch:{epoch}", collateral=-host["slashed"])
    due = [t for t in tranches if t["unlock_epoch"] == epoch] + store.records(
        "SELECT epoch, address, unlock_epoch, amount FROM vesting WHERE unlock_epoch = ? AND epoch < ? ORDER BY epoch, address", [epoch, epoch])
    for tranche in due:
        move("vesting_unlock", tranche["address"], f"granted:{tranche['epoch']}", locked=-tranche["amount"], balance=tranche["amount"])
    return rows, tranches


def run_rewards(store: ChainStore, layout: DataLayout, epoch: int) -> tuple[pl.DataFrame, dict]:
    """Write rewards, emissions, vesting and transfers for the epoch, with lineage from each payout to its sources."""
    hosts, emission = compute_rewards(store, layout, epoch)
    transfers, tranches = _transfers(store, epoch, hosts, store.epoch_params(epoch)["rewards"]["vesting_epochs"])
    rewards = hosts.select("address", "status", "weight", "total_weight", "reward", "work_coins", "withheld", "slashed",
                           "claimed", "payout").with_columns(pl.lit(epoch).alias("epoch"))
    with store.transaction():
        store.delete_epoch_rows(epoch, ["rewards", "emissions", "vesting"], stage=STAGE)
        store.insert("rewards", rewards.to_arrow())
        store.insert("emissions", [emission])
        store.insert("vesting", tranches)
        store.insert("transfers", transfers)
        store.connection.execute(
            """INSERT INTO lineage
               SELECT ?, 'payout', address, 'weight', address, 'rewards:reward' FROM rewards WHERE epoch = ? AND reward > 0
               UNION ALL
               SELECT ?, 'payout', f.host, 'fee_share', f.task_id, 'rewards:work_coins'
               FROM fee_shares f JOIN rewards r ON r.address = f.host AND r.epoch = f.epoch WHERE f.epoch = ? AND r.work_coins > 0""",
            [epoch, epoch, epoch, epoch])
    return hosts, emission
