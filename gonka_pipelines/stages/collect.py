"""Collect stage: take every pending inbox submission into the epoch, accepted with escrow or rejected with a reason."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gonka_pipelines.compute.profiles import llm_contexts
from gonka_pipelines.local.cores import core_count, process_pool
from gonka_pipelines.local.failpoints import failpoint
from gonka_pipelines.local.inbox import archive_submissions, read_entries, waiting_names
from gonka_pipelines.protocol.intake import Submission
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain

PARALLEL_FROM = 20_000
"""Inbox entries from which the collector reads, parses and checks signatures on every core (below, a pool costs more
than it saves)."""
READ_PER_CHUNK = 2_500
"""Entries one work item of the pool reads: enough to amortise the hand-over, few enough to spread evenly."""


def read_inbox(inbox: Path, max_bytes: int, limit: int, chain_id: str) -> list[Submission]:
    """The first `limit` inbox entries in name order, read ahead: everything intake does that needs no chain state, on
    every core from PARALLEL_FROM entries (workers read the files themselves, so only parsed entries cross over; the
    work function lives in local/inbox.py, which a worker imports in milliseconds, where this module pulls in torch)."""
    names = waiting_names(inbox)[:limit]
    read = functools.partial(read_entries, inbox=inbox, max_bytes=max_bytes, chain_id=chain_id)
    if len(names) < PARALLEL_FROM or core_count() < 2:
        return read(names)
    with process_pool() as pool:
        chunks = pool.map(read, [names[start:start + READ_PER_CHUNK] for start in range(0, len(names), READ_PER_CHUNK)])
        return [submission for chunk in chunks for submission in chunk]


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
    submissions = read_inbox(inbox, tasks.max_submission_bytes, tasks.max_submissions_per_epoch, env.chain_id)
    with open_chain() as store:
        store.require_writable(epoch)
        leftovers = store.consumed_submissions([s.submission_id for s in submissions], before_epoch=epoch)
        archive_submissions(inbox, leftovers)
        submissions = [s for s in submissions if s.submission_id not in leftovers]
        with store.transaction():
            store.open_epoch(env.params)
            context = store.intake_context(epoch, env.params, env.params.price_per_token, llm_contexts())
            result = env.rules.collect(submissions, context)
            store.write_intake(epoch, result)
            failpoint("collect.before_commit")
    summary = CollectSummary(epoch, len(submissions), len(result.accepted),
                             dict(sorted(Counter(r.reason.value for r in result.rejected).items())),
                             sum(t.escrow for t in result.accepted))
    log(f"epoch {epoch}: {summary.accepted} of {summary.submitted} submissions accepted; rejected {summary.rejected_by_reason}")
    return summary
