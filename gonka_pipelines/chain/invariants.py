"""Chain-wide invariants checked before a block is proposed."""

from __future__ import annotations

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.protocol.rewards import check_supply


def check_epoch_supply(store: ChainStore, epoch: int) -> int:
    """Σ balances + escrow + locked + collateral + unclaimed payouts held = genesis supply + minted − burned, mid-epoch;
    returns the supply.

    Raises SupplyInvariantError naming both sides when units were created or lost.
    """
    accounts = store.running_accounts(epoch)
    minted, burned = store.minted_and_burned(epoch)
    return check_supply(
        balances=[a["balance"] for a in accounts], escrow=[a["escrow"] for a in accounts],
        locked_vesting=[a["locked"] for a in accounts], collateral=[a["collateral"] for a in accounts],
        unclaimed=store.unclaimed_held(epoch), genesis_supply=store.genesis_supply(), minted=minted, burned=burned)


def lineage_mismatches(store: ChainStore, epoch: int) -> list[str]:
    """Payouts whose lineage does not add up: sources must sum to reward + work coins, paid only when claimed."""
    rows = store._query(
        """SELECT h.name, r.reward + r.work_coins, coalesce(l.total, 0), r.payout, r.claimed
           FROM rewards r JOIN hosts h USING (address)
           LEFT JOIN (SELECT address, sum(amount) total FROM payout_lineage WHERE epoch = ? GROUP BY address) l USING (address)
           WHERE r.epoch = ? ORDER BY h.name""", [epoch, epoch])
    return [f"{name}: lineage sums to {traced}, reward + work coins is {earned}, payout {payout} ({'claimed' if claimed else 'refused'})"
            for name, earned, traced, payout, claimed in rows
            if traced != earned or payout != (earned if claimed else 0)]


def flagged_honest_hosts(store: ChainStore, epoch: int) -> list[str]:
    """Hosts configured honest that the epoch nevertheless rejected, invalidated or refused: false positives."""
    return [f"{name}: {reason}" for name, reason in store.flagged_honest_hosts(epoch)]
