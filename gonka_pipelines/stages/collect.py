"""Collect stage: take every pending inbox submission into the epoch, accepted with escrow or rejected with a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.failpoints import failpoint
from gonka_pipelines.local.inbox import archive_submissions, pending_submissions
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import hash_value
from gonka_pipelines.protocol.intake import IntakeContext, collect
from gonka_pipelines.stages.environment import chain_genesis, epoch_parameters

STAGE = "collect"


@dataclass(frozen=True)
class CollectSummary:
    epoch: int
    submitted: int
    accepted: int
    rejected_by_reason: dict[str, int]
    escrowed: int


def intake_context(store: ChainStore, epoch: int, params: dict) -> IntakeContext:
    """What the checks need, read from the chain as it stands before this epoch's intake."""
    developers = dict(store.query("SELECT public_key, address FROM accounts WHERE kind = 'developer'"))
    return IntakeContext(
        chain_id=store.chain_id,
        developers=developers,
        balances=store.balances(epoch),
        used_nonces=set(store.query("SELECT developer, nonce FROM tasks WHERE epoch < ?", [epoch])),
        models={model for (model,) in store.query("SELECT DISTINCT unnest(models) FROM hosts")},
        max_prompt_bytes=params["tasks"]["max_prompt_bytes"],
        max_tokens_limit=params["tasks"]["max_tokens_limit"],
        price_per_token=params["price_per_token"],
    )


def run_collect(store: ChainStore, layout: DataLayout, epoch: int) -> CollectSummary:
    """Open the epoch (replacing a previous attempt) and take the inbox, all in one transaction."""
    params = epoch_parameters(chain_genesis(store), epoch)
    store.require_writable(epoch)
    submissions = pending_submissions(layout.inbox)
    leftovers = store.consumed_submissions([s.submission_id for s in submissions], before_epoch=epoch)
    archive_submissions(layout.inbox, leftovers)
    submissions = [s for s in submissions if s.submission_id not in leftovers]
    with store.transaction():
        store.open_epoch(epoch, params, hash_value(params))
        store.delete_epoch_rows(epoch, ["tasks", "rejected_tasks", "submissions"], stage=STAGE)
        result = collect(submissions, intake_context(store, epoch, params))
        store.insert("tasks", [{"epoch": epoch, **vars(task)} for task in result.accepted])
        store.insert("rejected_tasks", [{"epoch": epoch, "submission_id": r.submission_id, "reason": r.reason.value,
                                         "detail": r.detail, "raw_payload": r.raw_payload} for r in result.rejected])
        store.insert("submissions", [{"submission_id": t.submission_id, "epoch": epoch, "outcome": "accepted"} for t in result.accepted]
                     + [{"submission_id": r.submission_id, "epoch": epoch, "outcome": "rejected"} for r in result.rejected])
        store.insert("transfers", [{"transfer_id": hash_value(["escrow", t.task_id]), "epoch": epoch, "stage": STAGE,
                                    "account": t.developer, "balance_delta": -t.escrow, "escrow_delta": t.escrow,
                                    "kind": "escrow", "ref": t.task_id} for t in result.accepted])
        store.insert("lineage", [{"epoch": epoch, "child_kind": "task", "child_id": t.task_id, "parent_kind": "submission",
                                  "parent_id": t.submission_id, "relation": f"{STAGE}:accepted"} for t in result.accepted])
        failpoint("collect.before_commit")
    return CollectSummary(epoch, len(submissions), len(result.accepted),
                          dict(sorted(Counter(r.reason.value for r in result.rejected).items())),
                          sum(t.escrow for t in result.accepted))
