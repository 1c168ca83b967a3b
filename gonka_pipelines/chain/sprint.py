"""Sprint rows: signed PoC batches (accepted or rejected), validators' verdicts, and the weights they produce."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from gonka_pipelines.chain.core import StoreCore
from gonka_pipelines.protocol.records import BatchStatus

WEIGHTS_STAGE = "sprint_weights"
"""The tag of the weights' lineage rows (committed: it must not change)."""


class SprintRows(StoreCore):
    def write_poc_batches(self, epoch: int, rows: Sequence[dict[str, Any]]) -> None:
        with self.transaction():
            self._replace_epoch_rows(epoch, ["poc_batches"])
            self._insert("poc_batches", rows)

    def accepted_claims(self, epoch: int) -> list[tuple[str, list[int]]]:
        """(host, every accepted nonce ascending) per host with an accepted batch, in host order."""
        return self._query(
            "SELECT host, list_sort(flatten(list(nonces))) FROM poc_batches WHERE epoch = ? AND status = ? GROUP BY host ORDER BY host",
            [epoch, BatchStatus.ACCEPTED])

    def write_poc_verdicts(self, epoch: int, records: pa.Table) -> None:
        """One signed record per validator: vectors over the hosts it checked (read per pair through the poc_verdicts view)."""
        with self.transaction():
            self._replace_epoch_rows(epoch, ["poc_verdict_sets"])
            self._insert("poc_verdict_sets", records)

    def weight_inputs(self, epoch: int) -> list[dict[str, Any]]:
        """Per host: accepted hits, the in-force weight of validators that voted valid, and collateral held."""
        return self._records(
            """SELECT h.address, coalesce(b.hits, 0) AS hits, coalesce(v.valid_weight, 0) AS valid_vote_weight,
                      s.collateral
               FROM hosts h
               LEFT JOIN (SELECT host, sum(len(nonces)) hits FROM poc_batches WHERE epoch = ? AND status = ? GROUP BY host) b
                 ON b.host = h.address
               LEFT JOIN (SELECT v.host, sum(w.weight) valid_weight FROM poc_verdicts v
                          JOIN host_states w ON w.address = v.validator AND w.epoch = ? WHERE v.epoch = ? AND v.valid GROUP BY v.host) v
                 ON v.host = h.address
               JOIN account_states s ON s.address = h.address AND s.epoch = ?
               ORDER BY h.address""",
            [epoch, BatchStatus.ACCEPTED, epoch - 1, epoch, epoch - 1])

    def write_epoch_weights(self, epoch: int, rows: Sequence[dict[str, Any]]) -> None:
        """The epoch's new weights, with lineage from each to the accepted batches behind it."""
        with self.transaction():
            self._replace_epoch_rows(epoch, ["epoch_weights"], stage=WEIGHTS_STAGE)
            self._insert("epoch_weights", rows)
            self._execute(
                f"""INSERT INTO lineage SELECT epoch, 'weight', host, 'poc_batch', batch_id, '{WEIGHTS_STAGE}:hits'
                    FROM poc_batches WHERE epoch = ? AND status = ? ORDER BY batch_id""", [epoch, BatchStatus.ACCEPTED])

    def epoch_weight_rows(self, epoch: int) -> list[dict[str, Any]]:
        return self._records("SELECT * FROM epoch_weights WHERE epoch = ? ORDER BY address", [epoch])
