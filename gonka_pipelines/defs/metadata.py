"""What each stage's materialization shows in the UI: counts and totals as numbers, per-host tables as markdown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
import polars as pl

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.protocol.block import BlockHeader, signature_set_hash
from gonka_pipelines.reports.explain import explain_payout, render_markdown
from gonka_pipelines.stages.collect import CollectSummary
from gonka_pipelines.stages.environment import EpochEnvironment

Metadata = dict[str, Any]
Render = Callable[[EpochEnvironment, ChainStore, Any], Metadata]


def payouts_table(rows: list[dict]) -> str:
    """Markdown: one row per host with its weight, status, reward, work coins and payout."""
    lines = ["| host | status | weight | reward | work coins | withheld | claim | payout |", "|---|---|---:|---:|---:|---:|---|---:|"]
    lines += [f"| {r['name']} | {r['status']} | {r['weight']} | {r['reward']:,} | {r['work_coins']:,} | {r['withheld']:,} | "
              f"{'ok' if r['claimed'] else '**refused**'} | {r['payout']:,} |" for r in rows]
    return "\n".join(lines)


def _collect(env: EpochEnvironment, store: ChainStore, summary: CollectSummary) -> Metadata:
    return {"dagster/row_count": summary.submitted, "submitted": summary.submitted, "accepted": summary.accepted,
            "rejected": sum(summary.rejected_by_reason.values()), "escrowed": summary.escrowed,
            "rejected_by_reason": dg.MetadataValue.json(summary.rejected_by_reason)}


def _batches(env: EpochEnvironment, store: ChainStore, summary: dict[str, int]) -> Metadata:
    return {"dagster/row_count": summary["batches"], "batches": summary["batches"], "rejected_batches": summary["rejected"],
            "claimed_hits": summary["claimed_hits"]}


def _verdicts(env: EpochEnvironment, store: ChainStore, summary: dict[str, int]) -> Metadata:
    return {"dagster/row_count": summary["validators"], "validators": summary["validators"], "verdicts": summary["verdicts"],
            "invalid_votes": summary["invalid_votes"]}


def _weights(env: EpochEnvironment, store: ChainStore, rows: list[dict]) -> Metadata:
    table = "| host | hits | valid votes (weight) | asked (weight) | accepted | weight |\n|---|---:|---:|---:|---|---:|\n" + "\n".join(
        f"| {env.host[r['address']].name} | {r['hits']} | {r['valid_vote_weight']} | {r['vote_weight']} "
        f"| {'yes' if r['sprint_accepted'] else '**no**'} "
        f"| {r['weight']} |" for r in rows)
    return {"dagster/row_count": len(rows), "total_weight": sum(r["weight"] for r in rows),
            "sprints_rejected": sum(1 for r in rows if r["hits"] and not r["sprint_accepted"]), "weights": dg.MetadataValue.md(table)}


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
    emission, rows = result[1], store.payouts(env.epoch)
    derivations = "\n\n".join(render_markdown(explain_payout(store, row["name"], env.epoch)) for row in rows)
    return {"dagster/row_count": len(rows), "emission_minted": emission["minted"], "emission_scheduled": emission["scheduled"],
            "burned": emission["burned"], "fees": sum(r["work_coins"] + r["withheld"] for r in rows),
            "paid": sum(r["payout"] for r in rows), "hosts_caught": len(store.caught_hosts(env.epoch)),
            "payouts": dg.MetadataValue.md(payouts_table(rows)), "derivations": dg.MetadataValue.md(derivations)}


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
