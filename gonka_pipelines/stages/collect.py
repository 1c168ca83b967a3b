"""Collect stage: take every pending inbox submission into the epoch, accepted with escrow or rejected with a reason."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gonka_pipelines.compute.profiles import llm_contexts
from gonka_pipelines.local.cores import core_count, process_pool
from gonka_pipelines.local.failpoints import failpoint
from gonka_pipelines.local.inbox import archive_submissions, read_entry, waiting_names
from gonka_pipelines.protocol.intake import Submission, signatures_verify
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain

PARALLEL_FROM = 20_000
"""Inbox entries from which the collector checks signatures on every core while it reads the inbox (below, a pool
costs more than it saves)."""
CHECKED_PER_CHUNK = 2_500
"""Entries read before they go to the pool as one work item: enough to amortise the hand-over, few enough that the
workers start while the rest is read."""


def read_inbox(inbox: Path, max_bytes: int, limit: int, chain_id: str) -> tuple[list[Submission], dict[str, bool]]:
    """The first `limit` inbox entries in name order (read_entry), and submission id -> whether its signature verifies
    for every parsable one, checked in a process pool chunk by chunk as the entries are read (reading and checking
    overlap); the map is empty below PARALLEL_FROM entries or on one core, and intake checks each signature in turn."""
    names = waiting_names(inbox)[:limit]
    if len(names) < PARALLEL_FROM or core_count() < 2:
        return [read_entry(inbox, name, max_bytes) for name in names], {}
    submissions: list[Submission] = []
    checking = []
    with process_pool() as pool:
        for start in range(0, len(names), CHECKED_PER_CHUNK):
            chunk = [read_entry(inbox, name, max_bytes) for name in names[start:start + CHECKED_PER_CHUNK]]
            readable = [s for s in chunk if s.unreadable is None]
            checking.append((readable, pool.submit(signatures_verify, [s.raw for s in readable], chain_id)))
            submissions += chunk
        return submissions, {s.submission_id: ok for readable, verdicts in checking
                             for s, ok in zip(readable, verdicts.result()) if ok is not None}


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
    # before the chain is opened for the write
    submissions, signatures = read_inbox(inbox, tasks.max_submission_bytes, tasks.max_submissions_per_epoch, env.chain_id)
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
