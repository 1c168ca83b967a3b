"""The DuckDB ledger as one object: the core plus the named reads and writes of every concern.

Only chain/ writes SQL. Epoch writes are transactional; finalized epochs are immutable.
"""

from __future__ import annotations

from gonka_pipelines.chain.audit import AuditRows
from gonka_pipelines.chain.blocks import BlockRows
from gonka_pipelines.chain.core import (
    FINALIZED,
    OPEN,
    PROPOSED,
    ChainBusyError,
    ChainError,
    EpochOrderError,
    FinalizedEpochError,
    Head,
)
from gonka_pipelines.chain.explorer import ExplorerRows
from gonka_pipelines.chain.intake import IntakeRows
from gonka_pipelines.chain.lab import LabRows
from gonka_pipelines.chain.registry import RegistryRows
from gonka_pipelines.chain.rewards import RewardRows
from gonka_pipelines.chain.sprint import SprintRows
from gonka_pipelines.chain.tasks import TaskRows


class ChainStore(RegistryRows, IntakeRows, SprintRows, TaskRows, ExplorerRows, RewardRows, BlockRows, AuditRows,
                 LabRows):
    """Repository over one chain database. Use `ChainStore.open(path)` as a context manager."""


__all__ = ["FINALIZED", "OPEN", "PROPOSED", "ChainBusyError", "ChainError", "ChainStore", "EpochOrderError", "FinalizedEpochError", "Head"]
