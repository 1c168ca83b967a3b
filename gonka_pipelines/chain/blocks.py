"""Block rows: the post-state a proposal commits to, the header's roots, the signed proposal and its finalization."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gonka_pipelines.chain.commitments import epoch_roots
from gonka_pipelines.chain.core import PROPOSED, StoreCore

POST_STATE_TABLES = ("account_states", "host_states")
"""What write_post_state writes, in the transaction that then computes the proposal's roots."""


class BlockRows(StoreCore):
    def next_host_states(self, epoch: int) -> list[dict[str, Any]]:
        """Hosts after the epoch: the weight they won in its sprint (in force next epoch; an INVALID status costs the
        weight of this epoch, not that one), status, reputation and streak."""
        return self._records(
            """SELECT w.address, w.weight, h.status, h.reputation, h.epochs_served, h.consecutive_invalidations
               FROM epoch_weights w JOIN host_epochs h USING (epoch, address) WHERE w.epoch = ? ORDER BY w.address""", [epoch])

    def signing_weights(self, height: int) -> dict[str, int]:
        """The weights that propose and sign block `height`: those in force during its epoch, zero for a host the epoch
        found INVALID (PROTOCOL section 4: weight 0 for the rest of the epoch). Block 0 is signed by the genesis weights."""
        return dict(self._query(
            """SELECT s.address, CASE WHEN h.status = 'INVALID' THEN 0 ELSE s.weight END FROM host_states s
               LEFT JOIN host_epochs h ON h.address = s.address AND h.epoch = ? WHERE s.epoch = ? ORDER BY s.address""",
            [height, max(height - 1, 0)]))

    def write_post_state(self, epoch: int, host_rows: Sequence[dict[str, Any]]) -> None:
        """Accounts = previous state + the epoch's transfers; hosts as given (refused for an epoch that is not writable)."""
        self._replace_epoch_rows(epoch, list(POST_STATE_TABLES))
        self._insert("account_states", [{"epoch": epoch, **row} for row in self.running_accounts(epoch)])
        self._insert("host_states", [{"epoch": epoch, **row} for row in host_rows])

    def epoch_roots(self, epoch: int) -> dict[str, str]:
        """The Merkle root of every commitment over the epoch's rows as they stand (commitments.epoch_roots)."""
        return epoch_roots(self._connection, epoch)

    def proposal_roots(self, epoch: int) -> dict[str, str]:
        """epoch_roots inside the transaction that wrote the post-state (write_post_state): only its tables are hashed
        on this connection, the rest, committed by earlier stages, on other connections at once."""
        return epoch_roots(self._connection, epoch, POST_STATE_TABLES)

    def save_proposal(self, header: dict[str, Any], block_hash: str, signatures: Sequence[dict[str, Any]]) -> None:
        self._save_block(header, block_hash, signatures, PROPOSED)

    def signer_count(self, height: int) -> int:
        return self._scalar("SELECT count(*) FROM block_signatures WHERE height = ?", [height])
