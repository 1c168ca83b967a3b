"""Reads for people: block and host summaries, payouts by name, and the rows behind one host's payout."""

from __future__ import annotations

from typing import Any

from gonka_pipelines.chain.core import FINALIZED, StoreCore
from gonka_pipelines.protocol.host_status import HostStatus
from gonka_pipelines.protocol.records import BatchStatus, TaskOutcome

INVALIDATED_WORK = ("EXISTS (SELECT 1 FROM task_outcomes o WHERE o.epoch = w.epoch AND o.executor = w.address "
                    f"AND o.outcome = '{TaskOutcome.INVALIDATED}')")
CAUGHT = f"((w.hits > 0 AND NOT w.sprint_accepted) OR r.status = '{HostStatus.INVALID}' OR NOT r.claimed OR {INVALIDATED_WORK})"
"""The one "caught host" rule: its sprint was rejected, it was INVALID, its claim was refused, or validators
invalidated some work it executed (an inference or training task)."""


class AuditRows(StoreCore):
    def rejections_by_epoch(self, epoch: int | None = None) -> dict[int, dict[str, int]]:
        """Rejected submissions per epoch (only `epoch`'s when given) and reason."""
        rejected: dict[int, dict[str, int]] = {}
        for at, reason, count in self._query("SELECT epoch, reason, count(*) FROM rejected_tasks WHERE ? IS NULL OR epoch = ? "
                                             "GROUP BY 1, 2 ORDER BY 1, 2", [epoch, epoch]):
            rejected.setdefault(at, {})[reason] = count
        return rejected

    def training_report(self, epoch: int) -> list[dict[str, Any]]:
        """Per training task of an epoch: its executor, status and outcome, shards, loss curve and the version it made."""
        return self._records(
            """SELECT t.task_id, t.model, t.base_version, t.shards, t.steps, coalesce(h.name, '') AS executor_name, r.status,
                      coalesce(o.outcome, '') AS outcome, r.losses, r.version
               FROM training_tasks t JOIN training_results r USING (task_id) LEFT JOIN hosts h ON h.address = r.executor
               LEFT JOIN task_outcomes o USING (task_id) WHERE t.epoch = ? ORDER BY t.task_id""", [epoch])

    def finalized_blocks(self) -> list[dict[str, Any]]:
        """Per finalized block: height, hash, tasks accepted and signers."""
        return self._records(
            """SELECT b.height, b.hash,
                      (SELECT count(*) FROM tasks t WHERE t.epoch = b.height) AS accepted,
                      (SELECT count(*) FROM block_signatures s WHERE s.height = b.height) AS signers
               FROM blocks b WHERE b.status = ? ORDER BY b.height""", [FINALIZED])

    def host_records(self) -> list[dict[str, Any]]:
        """Per host over all finalized epochs: sprints rejected, epochs INVALID, claims refused, epochs with invalidated
        work, epochs caught (any of the four), total paid."""
        return self._records(
            f"""SELECT h.name, h.behaviour,
                      count(*) FILTER (w.hits > 0 AND NOT w.sprint_accepted) AS sprints_rejected,
                      count(*) FILTER (r.status = '{HostStatus.INVALID}') AS epochs_invalid,
                      count(*) FILTER (NOT r.claimed) AS claims_refused,
                      count(*) FILTER ({INVALIDATED_WORK}) AS epochs_invalidated,
                      count(*) FILTER ({CAUGHT}) AS epochs_caught,
                      coalesce(sum(r.payout), 0) AS paid
               FROM hosts h
               JOIN epoch_weights w ON w.address = h.address
               JOIN rewards r ON r.address = w.address AND r.epoch = w.epoch
               JOIN blocks b ON b.height = w.epoch AND b.status = ?
               GROUP BY h.name, h.behaviour ORDER BY h.name""", [FINALIZED])

    def host_history(self, address: str) -> list[dict[str, Any]]:
        """One host's finalized epochs, oldest first: its sprint (hits, accepted), weight and share, status, reputation,
        tasks (assigned, missed, validated, invalidated), reward, work coins, slashes, claim and payout."""
        return self._records(
            """SELECT r.epoch, w.hits, w.sprint_accepted, r.weight, r.total_weight, r.status, e.reputation, e.assigned,
                      e.missed, e.validated, e.invalidated, r.reward, r.work_coins, r.slashed, r.claimed, r.payout
               FROM rewards r JOIN blocks b ON b.height = r.epoch AND b.status = ?
               LEFT JOIN epoch_weights w USING (epoch, address) LEFT JOIN host_epochs e USING (epoch, address)
               WHERE r.address = ? ORDER BY r.epoch""", [FINALIZED, address])

    def submission_fates(self, prefix: str, finalized_only: bool = False) -> list[dict[str, Any]]:
        """Every submission whose id, or whose task's id, starts with prefix (with finalized_only, of finalized epochs
        alone): its epoch, outcome, rejection reason, and for an accepted one the task, its executor and result, its
        validation outcome and each validator's verdict, the fee shares and the refunds (account names resolved)."""
        submissions = self._records(
            """SELECT s.submission_id, s.epoch, s.outcome, j.reason, j.detail,
                      coalesce(t.task_id, g.task_id) AS task_id, CASE WHEN g.task_id IS NULL THEN 'inference' ELSE 'training' END AS kind,
                      coalesce(t.developer, g.developer) AS developer, coalesce(t.escrow, g.escrow) AS escrow,
                      coalesce(b.status, 'open') AS block
               FROM submissions s LEFT JOIN rejected_tasks j USING (submission_id) LEFT JOIN tasks t USING (submission_id)
               LEFT JOIN training_tasks g USING (submission_id) LEFT JOIN blocks b ON b.height = s.epoch
               WHERE (starts_with(s.submission_id, ?) OR starts_with(coalesce(t.task_id, g.task_id, ''), ?))
                 AND (NOT ? OR b.status = ?)
               ORDER BY s.epoch, s.submission_id""", [prefix, prefix, finalized_only, FINALIZED])
        names = dict(self._query("SELECT address, name FROM accounts"))
        for row in submissions:
            task = row["task_id"]
            row["developer"] = names.get(row["developer"], row["developer"])
            row["result"] = next(iter(self._records(
                """SELECT executor, status, cost, refund FROM task_results WHERE task_id = ?
                   UNION ALL SELECT executor, status, cost, refund FROM training_results WHERE task_id = ?""", [task, task])), None)
            if row["result"]:
                row["result"]["executor"] = names.get(row["result"]["executor"], row["result"]["executor"])
            row["outcome_row"] = next(iter(self._records(
                "SELECT validations, failures, invalid_vote_weight, outcome FROM task_outcomes WHERE task_id = ?", [task])), None)
            row["verdicts"] = [{**v, "validator": names.get(v["validator"], v["validator"])} for v in self._records(
                """SELECT validator, passed, reason FROM task_verdicts WHERE task_id = ?
                   UNION ALL SELECT validator, passed, reason FROM training_verdicts WHERE task_id = ? ORDER BY validator""",
                [task, task])]
            row["fee_shares"] = [{**f, "host": names.get(f["host"], f["host"])} for f in self._records(
                "SELECT host, role, amount FROM fee_shares WHERE task_id = ? ORDER BY role, host", [task])]
            row["transfers"] = self._records(
                "SELECT kind, balance_delta, escrow_delta, epoch FROM transfers WHERE ref = ? ORDER BY epoch, kind", [task])
        return submissions

    def caught_hosts(self, epoch: int) -> list[tuple[str, str]]:
        """(name, behaviour) of every host the epoch caught, by name."""
        return self._query(
            f"""SELECT h.name, h.behaviour FROM hosts h JOIN epoch_weights w ON w.address = h.address
                JOIN rewards r ON r.epoch = w.epoch AND r.address = w.address WHERE w.epoch = ? AND {CAUGHT} ORDER BY h.name""",
            [epoch])

    def flagged_honest_hosts(self, epoch: int) -> list[tuple[str, str]]:
        """(name, why) of hosts configured honest that the epoch nevertheless caught: false positives."""
        return self._query(
            f"""SELECT h.name, CASE WHEN w.hits > 0 AND NOT w.sprint_accepted THEN 'sprint rejected'
                                   WHEN r.status = '{HostStatus.INVALID}' THEN 'status INVALID'
                                   WHEN NOT r.claimed THEN 'claim refused' ELSE 'work invalidated' END
                FROM hosts h JOIN epoch_weights w ON w.address = h.address JOIN rewards r ON r.epoch = w.epoch AND r.address = w.address
                WHERE w.epoch = ? AND h.behaviour = 'honest' AND {CAUGHT}
                ORDER BY h.name""", [epoch])

    def payouts(self, epoch: int) -> list[dict[str, Any]]:
        """The epoch's rewards rows with each host's name, by name."""
        return self._records("SELECT h.name, r.* FROM rewards r JOIN hosts h USING (address) WHERE r.epoch = ? ORDER BY h.name", [epoch])

    def reward_row(self, epoch: int, address: str) -> dict[str, Any] | None:
        rows = self._records("SELECT * FROM rewards WHERE epoch = ? AND address = ?", [epoch, address])
        return rows[0] if rows else None

    def emission(self, epoch: int) -> dict[str, Any]:
        return self._records("SELECT * FROM emissions WHERE epoch = ?", [epoch])[0]

    def weight_row(self, epoch: int, address: str) -> dict[str, Any]:
        return self._records("SELECT * FROM epoch_weights WHERE epoch = ? AND address = ?", [epoch, address])[0]

    def accepted_batches(self, epoch: int, address: str) -> list[tuple[str, int]]:
        """(batch id, hits) of a host's accepted batches, in submission order."""
        return self._query(
            "SELECT batch_id, len(nonces) FROM poc_batches WHERE epoch = ? AND host = ? AND status = ? ORDER BY sequence",
            [epoch, address, BatchStatus.ACCEPTED])

    def first_paid_address(self, epoch: int) -> str | None:
        """The first address (in address order) with a non-zero final weight: it takes the rounding remainder."""
        return self._scalar("SELECT address FROM rewards WHERE epoch = ? AND weight > 0 ORDER BY address LIMIT 1", [epoch])

    def fee_shares_of(self, epoch: int, address: str) -> list[tuple[str, str, int, str]]:
        """(task id, role, amount, training detail) of a host's fee shares in the epoch; the detail is '' for an
        inference task, '(N steps → version V)' for a training task."""
        return self._query(
            """SELECT f.task_id, f.role, f.amount,
                      CASE WHEN t.task_id IS NULL THEN '' ELSE format('({} steps → version {})', t.steps, r.version[:12]) END
               FROM fee_shares f LEFT JOIN training_tasks t USING (task_id) LEFT JOIN training_results r USING (task_id)
               WHERE f.epoch = ? AND f.host = ? ORDER BY f.task_id""", [epoch, address])
