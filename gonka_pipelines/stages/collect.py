"""Collect stage: take every pending inbox submission into the epoch, accepted with escrow or rejected with a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.compute.profiles import llm_contexts
from gonka_pipelines.local.admission import admit, read_inbox
from gonka_pipelines.local.failpoints import failpoint
from gonka_pipelines.local.inbox import archive_submissions
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.intake import nonce_claims
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain


def admit_waiting(layout: DataLayout, limit: int) -> tuple[int, int]:
    """Check the signatures of up to `limit` inbox entries that arrived since the last check, under the chain's id and
    size limit (local/admission.admit; `gonka admit` and the inbox sensor). Returns (checked, waiting)."""
    with ChainStore.open(layout.database, read_only=True) as store:
        chain_id, max_bytes = store.chain_id, store.genesis().tasks.max_submission_bytes
    return admit(layout.inbox, layout.admitted, chain_id, max_bytes, limit)


@dataclass(frozen=True)
class CollectSummary:
    epoch: int
    submitted: int
    accepted: int
    """Inference tasks accepted; training orders are counted in `trainings`."""
    trainings: int
    rejected_by_reason: dict[str, int]
    escrowed: int
    """Escrow taken from developers' balances, for inference tasks and training orders."""


def run_collect(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> CollectSummary:
    """Open the epoch (replacing a previous attempt) and take the inbox, up to max_submissions_per_epoch submissions in
    name order, bundles whole (the rest wait for the next epoch), all in one transaction."""
    epoch, inbox, tasks = env.epoch, env.layout.inbox, env.params.tasks
    # before the chain is opened for the write
    submissions = read_inbox(inbox, env.layout.admitted, tasks.max_submission_bytes, tasks.max_submissions_per_epoch,
                             env.chain_id)
    with open_chain() as store:
        store.require_writable(epoch)
        leftovers = store.consumed_submissions(submissions.id_column(), before_epoch=epoch)
        archive_submissions(inbox, leftovers)
        submissions = submissions.without(leftovers)
        with store.transaction():
            store.open_epoch(env.params)
            context = store.intake_context(epoch, env.params, env.params.price_per_token, llm_contexts(),
                                           nonce_claims(submissions))
            result = env.rules.collect(submissions, context)
            store.write_intake(epoch, result)
            failpoint("collect.before_commit")
    summary = CollectSummary(epoch, len(submissions), result.accepted_count(), len(result.trainings),
                             dict(sorted(Counter(r.reason.value for r in result.rejected).items())), result.escrowed())
    log(f"epoch {epoch}: {summary.accepted} inference tasks and {summary.trainings} training orders accepted of "
        f"{summary.submitted} submissions; rejected {summary.rejected_by_reason}")
    return summary
