"""Reward rows: per-host rewards and payouts, the epoch's emission, vesting tranches, fee and payout transfers, lineage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from gonka_pipelines.chain.core import StoreCore

STAGE = "rewards"
"""The tag of the rewards' transfers and lineage (committed: it must not change)."""


class RewardRows(StoreCore):
    def seed_commitments(self, epoch: int) -> dict[str, str]:
        return dict(self._query("SELECT host, commitment FROM seed_commitments WHERE epoch = ?", [epoch]))

    def reward_inputs(self, epoch: int) -> pa.Table:
        """Per host with a sprint weight: status, validations required and done, load, collateral, fees earned."""
        return self._arrow(
            """SELECT w.address, h.status, h.done_validations, h.required_validations, h.contradicted_votes, h.assigned, h.missed,
                      w.weight AS sprint_weight, s.collateral, CAST(coalesce(f.fees, 0) AS BIGINT) AS fees
               FROM epoch_weights w JOIN host_epochs h ON h.address = w.address AND h.epoch = w.epoch
               JOIN account_states s ON s.address = w.address AND s.epoch = w.epoch - 1
               LEFT JOIN (SELECT host, sum(amount) fees FROM fee_shares WHERE epoch = ? GROUP BY host) f ON f.host = w.address
               WHERE w.epoch = ? ORDER BY w.address""", [epoch, epoch])

    def unclaimed_held(self, epoch: int) -> int:
        """Refused and unclaimed payouts held after an epoch's rewards: its own, or, before its rewards stage ran, the
        previous epoch's (each rewards stage burns the ones before it)."""
        return int(self._scalar("SELECT coalesce(max_by(unclaimed, epoch), 0) FROM emissions WHERE epoch <= ?", [epoch]))

    def minted_before(self, epoch: int) -> int:
        return int(self._scalar("SELECT coalesce(sum(minted), 0) FROM emissions WHERE epoch < ?", [epoch]))

    def fee_settlements(self, epoch: int) -> pa.Table:
        """task_id, developer, cost and outcome of every task (inference or training) with a cost, in task id order."""
        return self._arrow(
            """SELECT r.task_id, t.developer, r.cost, o.outcome FROM task_results r JOIN tasks t USING (task_id)
               JOIN task_outcomes o USING (task_id) WHERE r.epoch = ? AND r.cost > 0
               UNION ALL
               SELECT r.task_id, t.developer, r.cost, o.outcome FROM training_results r JOIN training_tasks t USING (task_id)
               JOIN task_outcomes o USING (task_id) WHERE r.epoch = ? AND r.cost > 0 ORDER BY 1""", [epoch, epoch])

    def vesting_due(self, epoch: int) -> list[dict[str, Any]]:
        """Tranches granted by earlier epochs that unlock in this one."""
        return self._records(
            "SELECT epoch, address, unlock_epoch, amount FROM vesting WHERE unlock_epoch = ? AND epoch < ? ORDER BY epoch, address",
            [epoch, epoch])

    def write_rewards(self, epoch: int, rewards: pa.Table, emission: dict[str, Any], vesting: Sequence[dict[str, Any]],
                      transfers: pa.Table) -> None:
        """The epoch's rewards, emission, vesting and transfers, with lineage from each payout to its weight and fee shares."""
        with self.transaction():
            self._replace_epoch_rows(epoch, ["rewards", "emissions", "vesting"], stage=STAGE)
            self._insert("rewards", rewards)
            self._insert("emissions", [emission])
            self._insert("vesting", vesting)
            self._insert("transfers", transfers)
            self._execute(
                f"""INSERT INTO lineage
                    SELECT ?, 'payout', address, 'weight', address, '{STAGE}:reward' FROM rewards WHERE epoch = ? AND reward > 0
                    UNION ALL
                    SELECT ?, 'payout', f.host, 'fee_share', f.task_id, '{STAGE}:work_coins'
                    FROM fee_shares f JOIN rewards r ON r.address = f.host AND r.epoch = f.epoch WHERE f.epoch = ? AND r.work_coins > 0""",
                [epoch, epoch, epoch, epoch])


