"""Block rows: the post-state a proposal commits to, the header's roots, the signed proposal and its finalization."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gonka_pipelines.chain.commitments import epoch_roots
from gonka_pipelines.chain.core import PROPOSED, StoreCore


class BlockRows(StoreCore):
    def next_host_states(self, epoch: int) -> list[dict[str, Any]]:
        """Hosts after the epoch: their final weight as the rewards stage settled it (zero when INVALID), status,
        reputation and streak."""
        return self._records(
            """SELECT r.address, r.weight, h.status, h.reputation, h.epochs_served, h.consecutive_invalidations
               FROM rewards r JOIN host_epochs h USING (epoch, address) WHERE r.epoch = ? ORDER BY r.address""", [epoch])

    def write_post_state(self, epoch: int, host_rows: Sequence[dict[str, Any]]) -> None:
        """Accounts = previous state + the epoch's transfers; hosts as given (refused for an epoch that is not writable)."""
        self._replace_epoch_rows(epoch, ["account_states", "host_states"])
        self._insert("account_states", [{"epoch": epoch, **row} for row in self.running_accounts(epoch)])
        self._insert("host_states", [{"epoch": epoch, **row} for row in host_rows])

    def epoch_roots(self, epoch: int) -> dict[str, str]:
        """The Merkle root of every commitment over the epoch's rows as they stand."""
        return epoch_roots(self._connection, epoch)

    def save_proposal(self, header: dict[str, Any], block_hash: str, signatures: Sequence[dict[str, Any]]) -> None:
        self._save_block(header, block_hash, signatures, PROPOSED)

    def signer_count(self, height: int) -> int:
        return self._scalar("SELECT count(*) FROM block_signatures WHERE height = ?", [height])
