"""Rows the designer's lab needs: cutting a scratch copy of a chain back to a height, what an epoch's collector saw
(every submission, rebuilt from the rows that committed it), and where two chains' rows of an epoch first differ."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gonka_pipelines.chain.audit import CAUGHT
from gonka_pipelines.chain.commitments import COMMITMENTS, epoch_rows
from gonka_pipelines.chain.core import StoreCore
from gonka_pipelines.protocol.crypto import canonical_bytes
from gonka_pipelines.protocol.messages import task_body_of, training_body_of
from gonka_pipelines.protocol.records import SubmissionOutcome


@dataclass(frozen=True)
class StoredSubmission:
    """One inbox entry an epoch took, as the chain keeps it: its id, its bytes (an accepted task's signed document,
    rebuilt from its row; a rejection's kept payload) and, for a rejection, the reason and detail."""

    submission_id: str
    raw: bytes
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Divergence:
    """The first committed row in which two chains' epochs differ: the table, the row's key and the columns."""

    table: str
    key: str
    columns: dict[str, tuple[object, object]]

    def __str__(self) -> str:
        shown = "; ".join(f"{c}: {_short(a)} vs {_short(b)}" for c, (a, b) in self.columns.items())
        return f"table {self.table}, row {self.key[:40]}: {shown}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


class LabRows(StoreCore):
    def truncate_after(self, height: int) -> None:
        """Delete every row beyond `height`: for a scratch copy the lab forks or replays from (a chain's own finalized
        rows are never cut)."""
        with self.transaction():
            for table in self._epoch_tables():
                self._execute(f"DELETE FROM {table} WHERE epoch > ?", [height])
            for table in ("block_signatures", "blocks"):
                self._execute(f"DELETE FROM {table} WHERE height > ?", [height])
            for table in ("epoch_runs", "epochs"):
                self._execute(f"DELETE FROM {table} WHERE epoch > ?", [height])

    def stored_submissions(self, epoch: int) -> list[StoredSubmission]:
        """Every submission the epoch took, in id order: accepted tasks as the signed documents their rows rebuild
        (the same bytes a client writes), rejections with their kept payload, reason and detail."""
        documents = {}
        for table, body_of in (("tasks", task_body_of), ("training_tasks", training_body_of)):
            for row in self._records(
                    f"""SELECT t.*, a.public_key AS signer_key, c.value AS chain_id FROM {table} t
                        JOIN accounts a ON a.address = t.developer JOIN chain_meta c ON c.key = 'chain_id'
                        WHERE t.epoch = ?""", [epoch]):
                documents[row["submission_id"]] = canonical_bytes({"body": body_of(row), "signature": row["signature"]})
        rejected = {r["submission_id"]: r for r in self._records(
            "SELECT submission_id, reason, detail, raw_payload FROM rejected_tasks WHERE epoch = ?", [epoch])}
        stored = []
        for submission_id, outcome in self._query(
                "SELECT submission_id, outcome FROM submissions WHERE epoch = ? ORDER BY submission_id", [epoch]):
            if outcome == SubmissionOutcome.ACCEPTED:
                stored.append(StoredSubmission(submission_id, documents[submission_id]))
            else:
                r = rejected[submission_id]
                stored.append(StoredSubmission(submission_id, bytes(r["raw_payload"]), r["reason"], r["detail"]))
        return stored

    def first_divergence(self, other: StoreCore, epoch: int) -> Divergence | None:
        """The first committed row (header roots in order, rows in key order) where this chain's epoch differs from
        `other`'s; None when every committed row is the same."""
        for commitment in COMMITMENTS:
            if commitment.epoch != "epoch":
                continue
            mine, theirs = (dict(epoch_rows(store._connection, commitment, epoch)) for store in (self, other))
            for key in sorted(mine.keys() | theirs.keys()):
                a, b = mine.get(key), theirs.get(key)
                if a != b:
                    if a is None or b is None:
                        return Divergence(commitment.table, key, {"row": ("present" if a else "missing", "present" if b else "missing")})
                    return Divergence(commitment.table, key, {c: (a[c], b[c]) for c in commitment.columns if a[c] != b[c]})
        return None

    def host_outcomes(self, first: int, last: int) -> list[dict[str, Any]]:
        """Per host over epochs first..last: reward, work coins, slashed collateral and payout summed, and the weight
        and status of the last epoch (what a fork's diff compares)."""
        return self._records(
            """SELECT h.name AS host, arg_max(r.weight, r.epoch) AS weight, arg_max(r.status, r.epoch) AS status,
                      sum(r.reward) AS reward, sum(r.work_coins) AS work_coins, sum(r.slashed) AS slashed,
                      sum(r.payout) AS payout
               FROM rewards r JOIN hosts h USING (address) WHERE r.epoch BETWEEN ? AND ? GROUP BY h.name ORDER BY h.name""",
            [first, last])

    def network_totals(self, first: int, last: int) -> dict[str, int]:
        """Over epochs first..last: units minted and burned, and the fees hosts earned (work coins and withheld fees)."""
        minted, burned = self._query("SELECT coalesce(sum(minted), 0), coalesce(sum(burned), 0) FROM emissions "
                                     "WHERE epoch BETWEEN ? AND ?", [first, last])[0]
        fees = self._scalar("SELECT coalesce(sum(work_coins + withheld), 0) FROM rewards WHERE epoch BETWEEN ? AND ?", [first, last])
        return {"minted": int(minted), "burned": int(burned), "fees": int(fees)}

    def sweep_outcome(self, first: int, last: int) -> dict[str, Any]:
        """What a sweep measures over epochs first..last: the largest host's share of the minted rewards and of the
        last epoch's weight, the share of adversarial hosts caught at least once, honest hosts ever flagged, and the
        units minted and burned."""
        reward_share, weight_share = self._query(
            """WITH per_host AS (SELECT address, sum(reward) AS reward FROM rewards WHERE epoch BETWEEN ? AND ? GROUP BY 1),
                    last AS (SELECT weight, total_weight FROM rewards WHERE epoch = ?)
               SELECT (SELECT max(reward) FROM per_host) / nullif((SELECT sum(minted) FROM emissions WHERE epoch BETWEEN ? AND ?), 0),
                      (SELECT max(weight) / nullif(max(total_weight), 0) FROM last)""", [first, last, last, first, last])[0]
        caught = dict(self._query(
            f"""SELECT h.behaviour = 'honest' AS honest, count(DISTINCT h.address) FROM hosts h JOIN epoch_weights w ON w.address = h.address
                JOIN rewards r ON r.epoch = w.epoch AND r.address = w.address WHERE w.epoch BETWEEN ? AND ? AND {CAUGHT}
                GROUP BY 1""", [first, last]))
        adversaries = self._scalar("SELECT count(*) FROM hosts WHERE behaviour <> 'honest'")
        totals = self.network_totals(first, last)
        return {"largest_host_reward_share": float(reward_share or 0.0), "largest_host_weight_share": float(weight_share or 0.0),
                "adversaries_caught_share": caught.get(False, 0) / adversaries if adversaries else None,
                "honest_hosts_flagged": caught.get(True, 0), "minted": totals["minted"], "burned": totals["burned"]}
