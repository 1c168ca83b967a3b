"""Intake rows: an epoch's accepted tasks with escrow, its rejections with reasons, and the submissions behind both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from gonka_pipelines.chain.core import FINALIZED, StoreCore
from gonka_pipelines.chain.hashing import hash_each
from gonka_pipelines.protocol.crypto import hash_value
from gonka_pipelines.protocol.intake import (
    TASK_SCHEMA,
    AcceptedTask,
    IntakeContext,
    IntakeResult,
    Rejected,
    RejectReason,
    TrainingLimits,
)
from gonka_pipelines.protocol.params import EpochParams, GenesisParams
from gonka_pipelines.protocol.records import SubmissionOutcome, TransferKind
from gonka_pipelines.protocol.training import VersionScore

STAGE = "collect"
"""The tag of intake's transfers and lineage (committed: it must not change)."""


class IntakeRows(StoreCore):
    def open_epoch(self, params: EpochParams) -> None:
        """Open (or reopen) the head's successor under params, clearing every row a previous attempt of it wrote in any
        stage: a re-run starts from intake, so nothing an interrupted attempt did (its refunds, say) may count."""
        self._open_epoch(params, hash_value(params.as_dict()))
        self._replace_epoch_rows(params.epoch, self._epoch_tables())

    def intake_context(self, epoch: int, params: GenesisParams, price_per_token: int, contexts: Mapping[str, int],
                       claims: pl.DataFrame) -> IntakeContext:
        """What intake's checks need for an epoch, read from the chain as it stands before the epoch's intake (the
        collector's and `gonka submit`'s view alike). `contexts`: each model's context length in tokens (a training
        window), which the model profiles know and the chain does not. `claims`: the (developer key, nonce) pairs the
        submissions name (protocol.intake.nonce_claims); only those of them already used are read, not every nonce
        the chain ever took (a million an epoch)."""
        tasks, training = params.tasks, params.training
        versions, developers = self.model_versions(), self.developer_keys()
        return IntakeContext(
            chain_id=self.chain_id, developers=developers, balances=self.balances(epoch),
            used_nonces=self.used_task_nonces(epoch, claims),
            models=self.served_models(),
            max_prompt_bytes=tasks.max_prompt_bytes, max_tokens_limit=tasks.max_tokens_limit, price_per_token=price_per_token,
            training=TrainingLimits(self.training_shards(), versions, {m: contexts[m] for m in set(versions.values())},
                                    training.max_steps, training.max_batch_size, training.max_learning_rate))

    def model_versions(self) -> dict[str, str]:
        """Every model version on the chain: its model's name by version hash."""
        return dict(self._query("SELECT version, model FROM model_versions ORDER BY version"))

    def version_scores(self, through_epoch: int | None = None) -> list[VersionScore]:
        """Every model version's held-out loss (those of epochs up to `through_epoch`), what the served-version rule
        compares."""
        return [VersionScore(*row) for row in self._query(
            "SELECT version, model, epoch, eval_loss FROM model_versions WHERE epoch <= coalesce(?, epoch) ORDER BY version",
            [through_epoch])]

    def resolve_version(self, prefix: str, model: str | None = None) -> str:
        """The one version (of `model`, when given) whose hash starts with `prefix`; else Rejected (unknown model
        version) saying why."""
        matches = [v for v, m in self.model_versions().items() if v.startswith(prefix.lower()) and model in (None, m)]
        if len(matches) != 1 or not prefix:
            of = f" of model {model!r}" if model else ""
            raise Rejected(RejectReason.UNKNOWN_MODEL_VERSION, f"{prefix!r} names {len(matches) if prefix else 'every'} model "
                                                               f"version(s){of}; give 12 or more hex digits of one (`gonka model list`)")
        return matches[0]

    def served_versions(self, epoch: int) -> dict[str, str]:
        """Each model's served version after an epoch (in force for the next), recorded in the epoch's post-state."""
        return dict(self._query("SELECT model, version FROM served_versions WHERE epoch = ? ORDER BY model", [epoch]))

    def served_losses(self) -> dict[int, dict[str, float]]:
        """The held-out loss of each model's served version after every epoch, by epoch and model."""
        losses: dict[int, dict[str, float]] = {}
        for epoch, model, loss in self._query("""SELECT s.epoch, s.model, v.eval_loss FROM served_versions s
                                                 JOIN model_versions v USING (version) ORDER BY s.epoch, s.model"""):
            losses.setdefault(epoch, {})[model] = loss
        return losses

    def version_rows(self) -> list[dict[str, Any]]:
        """Every model version with its lineage (parent, task, executor, shards) and losses, oldest first."""
        return self._records("""SELECT v.*, coalesce(h.name, '') AS executor_name FROM model_versions v
                                LEFT JOIN hosts h ON h.address = v.executor ORDER BY v.epoch, v.version""")

    def shard_names(self) -> dict[str, str]:
        """Every registered corpus shard's name (train-0, eval-0, ...) by hash."""
        return dict(self._query("SELECT hash, name FROM corpus_shards ORDER BY name"))

    def training_shards(self) -> frozenset[str]:
        """Hashes of the shards a training task may name (the held-out ones are for evaluation only)."""
        return frozenset(h for (h,) in self._query("SELECT hash FROM corpus_shards WHERE role = 'train'"))

    def developer_keys(self) -> dict[str, str]:
        """Developer addresses by public key."""
        return dict(self._query("SELECT public_key, address FROM accounts WHERE kind = 'developer'"))

    def used_task_nonces(self, before_epoch: int, claims: pl.DataFrame) -> set[tuple[str, int]]:
        """Which (developer address, nonce) pairs, of those the claims name (protocol.intake.CLAIM_SCHEMA: developer
        key, nonce), a task (inference or training) accepted before the epoch already used; a key of no developer
        account names none."""
        with self._registered("_claims", claims.to_arrow()):
            return set(self._query(
                """SELECT a.address, c.nonce FROM _claims c JOIN accounts a ON a.public_key = c.developer AND a.kind = 'developer'
                   JOIN (SELECT developer, nonce FROM tasks WHERE epoch < ? UNION ALL
                         SELECT developer, nonce FROM training_tasks WHERE epoch < ?) t ON t.developer = a.address AND t.nonce = c.nonce""",
                [before_epoch, before_epoch]))

    def served_models(self) -> set[str]:
        return {model for (model,) in self._query("SELECT DISTINCT unnest(models) FROM hosts")}

    def developer_nonces(self, developer: str) -> list[int]:
        """Nonces of a developer's accepted tasks, inference and training (developer by name or address)."""
        return [nonce for (nonce,) in self._query(
            """SELECT t.nonce FROM (SELECT developer, nonce FROM tasks UNION ALL SELECT developer, nonce FROM training_tasks) t
               JOIN accounts a ON a.address = t.developer WHERE a.name = ? OR a.address = ?""", [developer, developer])]

    def consumed_submissions(self, submission_ids: pl.Series, before_epoch: int) -> set[str]:
        """Which of these ids finalized epochs already took (their files linger if a crash hit before archiving)."""
        with self._registered("_waiting", pa.table({"submission_id": submission_ids.to_arrow()})):
            return {sid for (sid,) in self._query(
                """SELECT s.submission_id FROM _waiting w JOIN submissions s USING (submission_id)
                   JOIN epochs e ON e.epoch = s.epoch AND e.status = ? WHERE s.epoch < ?""", [FINALIZED, before_epoch])}

    def submission_ids(self, epoch: int) -> list[str]:
        return [sid for (sid,) in self._query("SELECT submission_id FROM submissions WHERE epoch = ? ORDER BY 1", [epoch])]

    def write_intake(self, epoch: int, result: IntakeResult) -> None:
        """Accepted tasks (inference and training) with their escrow transfers and lineage, rejections with reason and
        raw payload; built as columns (a million tasks an epoch, most of them taken in bulk as columns already)."""
        rejected = result.rejected
        one_by_one = pl.DataFrame(dict(zip(TASK_COLUMNS, zip(*result.accepted))) if result.accepted else None,
                                  schema=TASK_SCHEMA)
        tasks = pl.concat([result.taken, one_by_one]).to_arrow()
        self._insert("tasks", tasks.append_column("epoch", pa.repeat(epoch, tasks.num_rows)))
        self._insert("training_tasks", [{"epoch": epoch, **vars(task), "shards": list(task.shards)} for task in result.trainings])
        self._insert("rejected_tasks", pa.table({
            "epoch": [epoch] * len(rejected), "submission_id": [r.submission_id for r in rejected],
            "reason": [r.reason.value for r in rejected], "detail": [r.detail for r in rejected],
            "raw_payload": pa.array([r.raw_payload for r in rejected], pa.binary())}))
        training_ids, training_submissions, training_developers, training_escrows = _fields(
            result.trainings, ("task_id", "submission_id", "developer", "escrow"))
        text = tasks.schema.field("submission_id").type  # polars' large strings
        task_ids = pa.concat_arrays([*tasks["task_id"].chunks, pa.array(training_ids, text)])
        submission_ids = pa.concat_arrays([*tasks["submission_id"].chunks, pa.array(training_submissions, text)])
        developers = pa.concat_arrays([*tasks["developer"].chunks, pa.array(training_developers, text)])
        escrows = pa.concat_arrays([*tasks["escrow"].chunks, pa.array(training_escrows, pa.int64())])
        accepted = len(task_ids)
        self._insert("submissions", pa.table({
            "submission_id": pa.concat_arrays([submission_ids, pa.array([r.submission_id for r in rejected], text)]),
            "epoch": pa.repeat(epoch, accepted + len(rejected)),
            "outcome": pa.concat_arrays([pa.repeat(SubmissionOutcome.ACCEPTED.value, accepted),
                                         pa.repeat(SubmissionOutcome.REJECTED.value, len(rejected))])}))
        self._insert("transfers", pa.table({
            "transfer_id": hash_each(TransferKind.ESCROW, task_ids), "epoch": pa.repeat(epoch, accepted),
            "stage": pa.repeat(STAGE, accepted), "account": developers,
            "balance_delta": pc.negate(escrows), "escrow_delta": escrows,
            "kind": pa.repeat(TransferKind.ESCROW.value, accepted), "ref": task_ids}))
        self._insert("lineage", pa.table({
            "epoch": pa.repeat(epoch, accepted), "child_kind": pa.repeat("task", accepted), "child_id": task_ids,
            "parent_kind": pa.repeat("submission", accepted), "parent_id": submission_ids,
            "relation": pa.repeat(f"{STAGE}:accepted", accepted)}))


TASK_COLUMNS = AcceptedTask._fields
"""The tasks table's columns besides epoch: every field of an accepted task."""


def _fields(records: Sequence[Any], names: Sequence[str]) -> list[tuple]:
    """The records' fields as one tuple of values per name (two or more names), read by one attrgetter pass and
    transposed: a million tasks' columns without a Python-level getattr per value."""
    return list(zip(*map(attrgetter(*names), records))) if records else [() for _ in names]
