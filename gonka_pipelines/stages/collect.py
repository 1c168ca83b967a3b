"""Collect stage: take every pending inbox submission into the epoch, accepted with escrow or rejected with a reason."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from gonka_pipelines.compute.profiles import llm_contexts
from gonka_pipelines.local.cores import core_count, process_pool
from gonka_pipelines.local.failpoints import failpoint
from gonka_pipelines.local.inbox import archive_submissions, pending_submissions
from gonka_pipelines.protocol.intake import Submission, signature_verifies
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain

PARALLEL_FROM = 20_000
"""Inbox entries from which the collector checks signatures on every core before intake (below, a pool costs more
than it saves)."""


def signatures_on_every_core(submissions: list[Submission], chain_id: str, parallel_from: int = PARALLEL_FROM) -> dict[str, bool]:
    """Submission id -> whether its signature verifies, for every parsable submission, checked in a process pool;
    empty below parallel_from or on one core, and intake checks each signature in turn."""
    workers = core_count()
    readable = [s for s in submissions if s.unreadable is None]
    if len(readable) < parallel_from or workers < 2:
        return {}
    with process_pool() as pool:
        found = pool.map(signature_verifies, [s.raw for s in readable], [chain_id] * len(readable),
                         chunksize=max(1, len(readable) // (workers * 8)))
        return {s.submission_id: ok for s, ok in zip(readable, found) if ok is not None}


@dataclass(frozen=True)
class CollectSummary:
    epoch: int
    submitted: int
    accepted: int
    rejected_by_reason: dict[str, int]
    escrowed: int


def run_collect(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> CollectSummary:
    """Open the epoch (replacing a previous attempt) and take the inbox, up to max_submissions_per_epoch entries in name
    order (the rest wait for the next epoch), all in one transaction."""
    epoch, inbox, tasks = env.epoch, env.layout.inbox, env.params.tasks
    submissions = pending_submissions(inbox, tasks.max_submission_bytes, tasks.max_submissions_per_epoch)
    signatures = signatures_on_every_core(submissions, env.chain_id)  # before the chain is opened for the write
    with open_chain() as store:
        store.require_writable(epoch)
        leftovers = store.consumed_submissions([s.submission_id for s in submissions], before_epoch=epoch)
        archive_submissions(inbox, leftovers)
        submissions = [s for s in submissions if s.submission_id not in leftovers]
        with store.transaction():
            store.open_epoch(env.params)
            context = dataclasses.replace(store.intake_context(epoch, env.params, env.params.price_per_token, llm_contexts()),
                                          signatures=signatures)
            result = env.rules.collect(submissions, context)
            store.write_intake(epoch, result)
            failpoint("collect.before_commit")
    summary = CollectSummary(epoch, len(submissions), len(result.accepted),
                             dict(sorted(Counter(r.reason.value for r in result.rejected).items())),
                             sum(t.escrow for t in result.accepted))
    log(f"epoch {epoch}: {summary.accepted} of {summary.submitted} submissions accepted; rejected {summary.rejected_by_reason}")
    return summary
