"""Records the stages pass between chain, protocol and compute, and the status codes stored in their rows."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gonka_pipelines.protocol.params import Behaviour


@dataclass(frozen=True)
class Host:
    """A registered host: its address and key, capacity, the models it serves and how it behaves (simulation)."""

    address: str
    name: str
    public_key: str
    capacity: int
    models: tuple[str, ...]
    behaviour: Behaviour


class SubmissionOutcome(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class BatchStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class ResultStatus(enum.StrEnum):
    COMPLETED = "completed"
    EXPIRED = "expired"


class TaskOutcome(enum.StrEnum):
    PASSED = "passed"
    INVALIDATED = "invalidated"
    UNVALIDATED = "unvalidated"


class TransferKind(enum.StrEnum):
    """Why units moved: every transfer row names one (the supply invariant sums them all)."""

    ESCROW = "escrow"
    REFUND = "refund"
    EXPIRY_REFUND = "expiry_refund"
    FEE = "fee"
    FEE_REFUND = "fee_refund"
    WORK_COINS = "work_coins"
    REWARD = "reward"
    SLASH = "slash"
    VESTING_UNLOCK = "vesting_unlock"


class ShareRole(enum.StrEnum):
    """Who earns a share of a passed task's fee."""

    EXECUTOR = "executor"
    VALIDATOR = "validator"
