"""Collect stage: take every pending inbox submission into the epoch, accepted with escrow or rejected with a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.failpoints import failpoint
from gonka_pipelines.local.inbox import archive_submissions, pending_submissions
from gonka_pipelines.protocol.intake import IntakeContext, max_submission_bytes
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain


@dataclass(frozen=True)
class CollectSummary:
    epoch: int
    submitted: int
    accepted: int
    rejected_by_reason: dict[str, int]
    escrowed: int


def intake_context(env: EpochEnvironment, store: ChainStore) -> IntakeContext:
    """What the checks need, read from the chain as it stands before this epoch's intake."""
    tasks = env.params.tasks
    return IntakeContext(
        chain_id=env.chain_id, developers=store.developer_keys(), balances=store.balances(env.epoch),
        used_nonces=store.used_task_nonces(before_epoch=env.epoch), models=store.served_models(),
        max_prompt_bytes=tasks.max_prompt_bytes, max_tokens_limit=tasks.max_tokens_limit, price_per_token=env.params.price_per_token,
    )


def run_collect(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> CollectSummary:
    """Open the epoch (replacing a previous attempt) and take the inbox, all in one transaction."""
    epoch, inbox = env.epoch, env.layout.inbox
    submissions = pending_submissions(inbox, max_submission_bytes(env.params.tasks.max_prompt_bytes))
    with open_chain() as store:
        store.require_writable(epoch)
        leftovers = store.consumed_submissions([s.submission_id for s in submissions], before_epoch=epoch)
        archive_submissions(inbox, leftovers)
        submissions = [s for s in submissions if s.submission_id not in leftovers]
        with store.transaction():
            store.open_epoch(env.params)
            result = env.rules.collect(submissions, intake_context(env, store))
            store.write_intake(epoch, result)
            failpoint("collect.before_commit")
    summary = CollectSummary(epoch, len(submissions), len(result.accepted),
                             dict(sorted(Counter(r.reason.value for r in result.rejected).items())),
                             sum(t.escrow for t in result.accepted))
    log(f"epoch {epoch}: {summary.accepted} of {summary.submitted} submissions accepted; rejected {summary.rejected_by_reason}")
    return summary
