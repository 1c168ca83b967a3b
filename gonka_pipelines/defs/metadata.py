"""What each stage's materialization shows in the UI: counts and totals as numbers (amounts also in GNK), per-host
tables as table metadata with a schema (heaviest host first), and one number per host so the UI plots a host across
epochs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
import polars as pl

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.protocol.block import BlockHeader, signature_set_hash
from gonka_pipelines.reports.explain import explain_payout, render_markdown
from gonka_pipelines.reports.units import gnk
from gonka_pipelines.stages.collect import CollectSummary
from gonka_pipelines.stages.environment import EpochEnvironment

Metadata = dict[str, Any]
Render = Callable[[EpochEnvironment, ChainStore, Any], Metadata]


PAYOUT_SCHEMA = dg.TableSchema([
    dg.TableColumn("host"), dg.TableColumn("status"), dg.TableColumn("weight", "int"), dg.TableColumn("share", "string"),
    dg.TableColumn("reward (GNK)"), dg.TableColumn("work coins (GNK)"), dg.TableColumn("withheld (GNK)"),
    dg.TableColumn("claim"), dg.TableColumn("payout (GNK)"), dg.TableColumn("payout (base units)", "int")])
WEIGHT_SCHEMA = dg.TableSchema([
    dg.TableColumn("host"), dg.TableColumn("hits", "int"), dg.TableColumn("valid votes (weight)", "int"),
    dg.TableColumn("asked (weight)", "int"), dg.TableColumn("accepted", "bool"), dg.TableColumn("weight", "int"),
    dg.TableColumn("share", "string")])


def heaviest_first(rows: list[dict], name: Callable[[dict], str]) -> list[dict]:
    return sorted(rows, key=lambda r: (-r["weight"], name(r)))


def share(weight: int, total: int) -> str:
    return f"{weight / total:.2%}" if total else "-"


def payouts_table(rows: list[dict], base_units: int) -> dg.TableMetadataValue:
    """One row per host, heaviest first: status, weight and share, then every amount in GNK and the payout in base units."""
    total = sum(r["weight"] for r in rows)
    return dg.MetadataValue.table([dg.TableRecord({
        "host": r["name"], "status": r["status"], "weight": r["weight"], "share": share(r["weight"], total),
        "reward (GNK)": gnk(r["reward"], base_units), "work coins (GNK)": gnk(r["work_coins"], base_units),
        "withheld (GNK)": gnk(r["withheld"], base_units), "claim": "ok" if r["claimed"] else "REFUSED",
        "payout (GNK)": gnk(r["payout"], base_units), "payout (base units)": r["payout"]})
        for r in heaviest_first(rows, lambda r: r["name"])], PAYOUT_SCHEMA)


def in_gnk(units: int, base_units: int) -> float:
    """An amount as a number of GNK, for the UI's plots (the exact base units sit beside it)."""
    return units / base_units


def _collect(env: EpochEnvironment, store: ChainStore, summary: CollectSummary) -> Metadata:
    return {"dagster/row_count": summary.submitted, "submitted": summary.submitted, "accepted": summary.accepted,
            "trainings": summary.trainings, "rejected": sum(summary.rejected_by_reason.values()), "escrowed": summary.escrowed,
            "rejected_by_reason": dg.MetadataValue.json(summary.rejected_by_reason)}


def _batches(env: EpochEnvironment, store: ChainStore, summary: dict[str, int]) -> Metadata:
    return {"dagster/row_count": summary["batches"], "batches": summary["batches"], "rejected_batches": summary["rejected"],
            "claimed_hits": summary["claimed_hits"]}


def _verdicts(env: EpochEnvironment, store: ChainStore, summary: dict[str, int]) -> Metadata:
    return {"dagster/row_count": summary["validators"], "validators": summary["validators"], "verdicts": summary["verdicts"],
            "invalid_votes": summary["invalid_votes"]}


def _weights(env: EpochEnvironment, store: ChainStore, rows: list[dict]) -> Metadata:
    total = sum(r["weight"] for r in rows)

    def name(row: dict) -> str:
        return env.host[row["address"]].name

    table = dg.MetadataValue.table([dg.TableRecord({
        "host": name(r), "hits": r["hits"], "valid votes (weight)": r["valid_vote_weight"], "asked (weight)": r["vote_weight"],
        "accepted": bool(r["sprint_accepted"]), "weight": r["weight"], "share": share(r["weight"], total)})
        for r in heaviest_first(rows, name)], WEIGHT_SCHEMA)
    return {"dagster/row_count": len(rows), "total_weight": total,
            "sprints_rejected": sum(1 for r in rows if r["hits"] and not r["sprint_accepted"]), "weights": table,
            **{f"weight/{name(r)}": r["weight"] for r in rows}}


def _results(env: EpochEnvironment, store: ChainStore, summary: dict[str, int]) -> Metadata:
    return {"dagster/row_count": summary["completed"] + summary["expired"], "completed": summary["completed"],
            "expired": summary["expired"], "trained": summary["trained"], "training_expired": summary["training_expired"]}


def _task_verdicts(env: EpochEnvironment, store: ChainStore, summary: dict[str, int]) -> Metadata:
    statuses = store.host_status_counts(env.epoch)
    return {"dagster/row_count": summary["validations"], "validations": summary["validations"],
            "invalidated_tasks": summary["invalidated"], "training_validations": summary["training_validations"],
            "new_model_versions": summary["new_versions"], "hosts_invalid": statuses.get("INVALID", 0),
            "statuses": dg.MetadataValue.json(statuses)}


def _rewards(env: EpochEnvironment, store: ChainStore, result: tuple[pl.DataFrame, dict]) -> Metadata:
    """Amounts in base units (exact integers) and in GNK (for reading and plotting), the payouts table, each host's
    payout in GNK as its own number (the asset's plots follow one host across epochs), and every derivation."""
    emission, rows, base = result[1], store.payouts(env.epoch), env.params.token.base_units
    derivations = "\n\n".join(render_markdown(explain_payout(store, row["name"], env.epoch)) for row in rows)
    amounts = {"emission_minted": emission["minted"], "emission_scheduled": emission["scheduled"], "burned": emission["burned"],
               "fees": sum(r["work_coins"] + r["withheld"] for r in rows), "paid": sum(r["payout"] for r in rows)}
    return {"dagster/row_count": len(rows), **amounts, **{f"{key}_gnk": in_gnk(units, base) for key, units in amounts.items()},
            "hosts_caught": len(store.caught_hosts(env.epoch)), "payouts": payouts_table(rows, base),
            **{f"payout_gnk/{r['name']}": in_gnk(r["payout"], base) for r in rows},
            "derivations": dg.MetadataValue.md(derivations)}


def _proposal(env: EpochEnvironment, store: ChainStore, header: BlockHeader) -> Metadata:
    signers = store.signer_count(env.epoch)
    return {"dagster/row_count": signers, "height": env.epoch, "block_hash": header.hash, "prev_hash": header.prev_hash,
            "signers": signers, "roots": dg.MetadataValue.json(header.roots)}


def _block(env: EpochEnvironment, store: ChainStore, block_hash: str) -> Metadata:
    """The final block: its hash and link, time, signers and their weight, and what it holds."""
    block = store.block(env.epoch)
    assert block is not None, "the block stage has just finalized it"
    signatures = block["signatures"]
    return {"height": env.epoch, "block_hash": block_hash, "prev_hash": block["header"]["prev_hash"],
            "timestamp": block["header"]["timestamp"], "signers": len(signatures),
            "signed_weight": sum(s["weight"] for s in signatures), "inference_tasks": store.task_count(env.epoch),
            "training_tasks": len(store.epoch_trainings(env.epoch)),
            "next_epoch": str(env.epoch + 1), "signatures_hash": signature_set_hash(signatures)}


RENDER: dict[str, Render] = {
    "epoch_tasks": _collect, "sprint_batches": _batches, "sprint_verdicts": _verdicts, "epoch_weights": _weights,
    "task_results": _results, "task_verdicts": _task_verdicts, "rewards": _rewards, "block_proposal": _proposal,
    "block": _block,
}
"""Metadata of every stage's asset, by stage name (tests check it covers the registry)."""
