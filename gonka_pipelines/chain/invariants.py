"""Chain-wide invariants checked before a block is proposed."""

from __future__ import annotations

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.protocol.rewards import check_supply


def check_epoch_supply(store: ChainStore, epoch: int) -> int:
    """Σ balances + escrow + locked + collateral = genesis supply + minted − burned, mid-epoch; returns the supply.

    Raises SupplyInvariantError naming both sides when units were created or lost.
    """
    accounts = store.running_accounts(epoch)
    minted, burned = store.query("SELECT coalesce(sum(minted), 0), coalesce(sum(burned), 0) FROM emissions WHERE epoch <= ?", [epoch])[0]
    return check_supply(
        balances=[a["balance"] for a in accounts], escrow=[a["escrow"] for a in accounts],
        locked_vesting=[a["locked"] for a in accounts], collateral=[a["collateral"] for a in accounts],
        genesis_supply=int(store.meta("genesis_supply")), minted=int(minted), burned=int(burned))
