"""Task rows: seed commitments, executed results with refunds, sampled verdicts, outcomes, fee shares, host epochs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gonka_pipelines.chain.core import StoreCore
from gonka_pipelines.protocol.crypto import MessageKind
from gonka_pipelines.protocol.records import ResultStatus

EXECUTION_STAGE = "task_results"
VALIDATION_STAGE = "task_verdicts"
"""Tags of the stages' transfers (committed: they must not change)."""


class TaskRows(StoreCore):
    def epoch_tasks(self, epoch: int) -> pa.Table:
        """The epoch's accepted tasks (what execution needs), in no set order (execution orders them once assigned: a
        sort here moved a million prompts for nothing); `version` is '' where the task asked for the served one."""
        return self._arrow(
            "SELECT task_id, developer, model, version, prompt, prompt_tokens, max_tokens, escrow FROM tasks WHERE epoch = ?",
            [epoch])

    def epoch_trainings(self, epoch: int) -> list[dict[str, Any]]:
        """The epoch's accepted training tasks (what execution needs), in task id order."""
        return self._records(
            """SELECT task_id, developer, model, base_version, shards, steps, batch_size, learning_rate, seed, tokens, escrow
               FROM training_tasks WHERE epoch = ? ORDER BY task_id""", [epoch])

    def completed_trainings(self, epoch: int) -> list[dict[str, Any]]:
        """Completed training results with their orders (what validators re-run), in task id order."""
        return self._records(
            """SELECT r.task_id, r.executor, r.version, r.checkpoint_steps, r.checkpoints, r.losses, r.cost, t.model,
                      t.base_version, t.shards, t.steps, t.batch_size, t.learning_rate, t.seed
               FROM training_results r JOIN training_tasks t USING (task_id) WHERE r.epoch = ? AND r.status = ?
               ORDER BY r.task_id""", [epoch, ResultStatus.COMPLETED])

    def task_count(self, epoch: int) -> int:
        return self._scalar("SELECT count(*) FROM tasks WHERE epoch = ?", [epoch])

    def _replace_record_roots(self, epoch: int, kinds: Sequence[MessageKind], roots: Sequence[dict[str, Any]]) -> None:
        """An epoch's signed roots of these kinds (each stage writes its own kinds; re-runs replace)."""
        self._execute("DELETE FROM record_roots WHERE epoch = ? AND list_contains(?, kind)", [epoch, [str(k) for k in kinds]])
        self._insert("record_roots", roots)

    def write_task_results(self, epoch: int, commitments: Sequence[dict[str, Any]], results: pa.Table,
                           refunds: pa.Table, trainings: Sequence[dict[str, Any]],
                           roots: Callable[[], Sequence[dict[str, Any]]]) -> None:
        """Seed commitments, inference and training results with each executor's signed roots over them, and refunds;
        the roots are asked for last, once the rows are in (a stage signs them meanwhile)."""
        with self.transaction():
            self._replace_epoch_rows(epoch, ["seed_commitments", "task_results", "training_results"], stage=EXECUTION_STAGE)
            self._insert("seed_commitments", commitments)
            self._insert("task_results", results)
            self._insert("training_results", trainings)
            self._insert("transfers", refunds)
            self._replace_record_roots(epoch, [MessageKind.RESULT, MessageKind.TRAINING_RESULT], roots())

    def completed_results(self, epoch: int) -> pa.Table:
        """(task_id, executor, cost) of the epoch's completed tasks, in task id order."""
        return self._arrow("SELECT task_id, executor, cost FROM task_results WHERE epoch = ? AND status = ? ORDER BY task_id",
                           [epoch, ResultStatus.COMPLETED])

    def checked_outputs(self, task_ids: Sequence[str] | pa.Array) -> pa.Table:
        """Outputs, top-5 log-probs and prompts of the tasks some validator checks (only those: they are the bulk), in the
        order of the ids given (an id without a result or a task left out); the ids as a list or an Arrow column (a
        million of them need not become Python strings). Sorted by the ids' positions, not the ids themselves (a third
        less at 630,000 rows of nested lists), the results' lists and the tasks' columns apart, then side by side where
        each id given has one of each, as execution writes them: one sort of both took 1.49 s against 1.00 s on a
        million-task chain. Otherwise (an id lacking one, or held twice) the rows come from one join of both."""
        ids = task_ids if isinstance(task_ids, pa.Array) else pa.array(task_ids, pa.string())
        with self._registered("_checked", pa.table({"task_id": ids, "position": np.arange(len(ids))})):
            results = self._arrow("""SELECT c.position, r.task_id, r.output_tokens, r.top_ids, r.top_logprobs
                                     FROM _checked c JOIN task_results r USING (task_id) ORDER BY c.position""")
            tasks = self._arrow("""SELECT c.position, t.prompt, t.model, t.version, t.max_tokens
                                   FROM _checked c JOIN tasks t USING (task_id) ORDER BY c.position""")
            if not (results["position"].equals(tasks["position"]) and pc.count_distinct(results["position"]).as_py() == results.num_rows):
                return self._arrow(
                    """SELECT r.task_id, r.output_tokens, r.top_ids, r.top_logprobs, t.prompt, t.model, t.version, t.max_tokens
                       FROM _checked c JOIN task_results r USING (task_id) JOIN tasks t USING (task_id) ORDER BY c.position""")
        return pa.Table.from_arrays([*results.columns[1:], *tasks.columns[1:]], names=results.column_names[1:] + tasks.column_names[1:])

    def host_states(self, epoch: int) -> dict[str, dict[str, Any]]:
        """An epoch's post-state of every host by address (status, reputation, streak, epochs served)."""
        return {row["address"]: row for row in self._records("SELECT * FROM host_states WHERE epoch = ?", [epoch])}

    def executor_loads(self, epoch: int) -> list[dict[str, Any]]:
        """Per executor: tasks (inference and training) assigned and missed (expired) in the epoch."""
        return self._records(
            "SELECT executor AS address, count(*) AS assigned, count(*) FILTER (status = ?) AS missed "
            "FROM (SELECT executor, status FROM task_results WHERE epoch = ? UNION ALL "
            "      SELECT executor, status FROM training_results WHERE epoch = ?) "
            "WHERE executor != '' GROUP BY executor", [ResultStatus.EXPIRED, epoch, epoch])

    def contradicted_poc_votes(self, epoch: int) -> list[dict[str, Any]]:
        """Per validator: "valid" votes for sprints the weighted vote rejected."""
        return self._records(
            """SELECT v.validator AS address, count(*) AS contradicted_votes FROM poc_verdicts v
               JOIN epoch_weights w ON w.address = v.host AND w.epoch = v.epoch
               WHERE v.epoch = ? AND v.valid AND NOT w.sprint_accepted GROUP BY v.validator""", [epoch])

    def miss_history(self, before_epoch: int) -> dict[str, list[float]]:
        """Per host: its miss rate of every earlier epoch in which it was assigned tasks, oldest first."""
        return dict(self._query(
            "SELECT address, list(missed / assigned ORDER BY epoch) FROM host_epochs WHERE epoch < ? AND assigned > 0 GROUP BY address",
            [before_epoch]))

    def write_task_verdicts(self, epoch: int, verdicts: Sequence[dict[str, Any]], roots: Callable[[], Sequence[dict[str, Any]]],
                            outcomes: Sequence[dict[str, Any]], fee_shares: Sequence[dict[str, Any]],
                            host_epochs: Sequence[dict[str, Any]], training_verdicts: Sequence[dict[str, Any]],
                            versions: Sequence[dict[str, Any]], served: Mapping[str, str]) -> None:
        """Inference and training verdicts with each validator's signed roots over them, every task's outcome and fee
        shares, host standings, the model versions the epoch's validated training produced, and each model's served
        version after the epoch; the roots are asked for last, once the rows are in (a stage signs them meanwhile)."""
        with self.transaction():
            self._replace_epoch_rows(epoch, ["task_verdicts", "task_outcomes", "fee_shares", "host_epochs", "training_verdicts",
                                             "model_versions", "served_versions"], stage=VALIDATION_STAGE)
            self._insert("task_verdicts", verdicts)
            self._insert("training_verdicts", training_verdicts)
            self._insert("model_versions", versions)
            self._insert("served_versions", [{"epoch": epoch, "model": m, "version": v} for m, v in served.items()])
            self._insert("task_outcomes", outcomes)
            self._insert("fee_shares", fee_shares)
            self._insert("host_epochs", host_epochs)
            self._replace_record_roots(epoch, [MessageKind.TASK_VERDICT, MessageKind.TRAINING_VERDICT], roots())

    def host_status_counts(self, epoch: int) -> dict[str, int]:
        return dict(self._query("SELECT status, count(*) FROM host_epochs WHERE epoch = ? GROUP BY 1 ORDER BY 1", [epoch]))
