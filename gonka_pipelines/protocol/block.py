"""Block headers: canonical content, hash, proposer choice and the 2/3 finality quorum."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from gonka_pipelines.protocol.crypto import hash_value

GENESIS_PREV_HASH = "0" * 64
"""The previous block hash of block 0 (nothing precedes genesis)."""


class BlockStatus(enum.StrEnum):
    """An epoch's and its block's life: opened by intake, proposed with signatures, then final and immutable."""

    OPEN = "open"
    PROPOSED = "proposed"
    FINALIZED = "finalized"


@dataclass(frozen=True)
class BlockHeader:
    """PROTOCOL section 6: what every host signs; the block hash is the hash of its canonical encoding."""

    chain_id: str
    height: int
    prev_hash: str
    timestamp: str
    params_hash: str
    roots: dict[str, str]
    proposer: str
    prev_signatures: str
    """signature_set_hash of the previous block's signatures, so a dropped or moved signature breaks the next block."""

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def hash(self) -> str:
        return hash_value(self.as_dict())


def signature_set_hash(signatures: Iterable[Mapping]) -> str:
    """Hash of a block's signer set: every (signer, weight, signature), in signer order (genesis follows the empty set)."""
    return hash_value(sorted(({"signer": s["signer"], "weight": s["weight"], "signature": s["signature"]} for s in signatures),
                             key=lambda s: s["signer"]))


def quorum_reached(signed_weight: int, total_weight: int) -> bool:
    """Final when the signers hold strictly more than two thirds of the weight."""
    return total_weight > 0 and 3 * signed_weight > 2 * total_weight


def choose_proposer(prev_hash: str, weights: dict[str, int]) -> str:
    """Weighted pick among hosts with weight, keyed by the previous block hash (replayable)."""
    candidates = sorted((address, weight) for address, weight in weights.items() if weight > 0)
    if not candidates:
        raise ValueError("no host has weight: nobody can propose a block")
    total = sum(weight for _, weight in candidates)
    point = int.from_bytes(hashlib.sha256(bytes.fromhex(prev_hash) + b"proposer").digest()[:8], "big") % total
    for address, weight in candidates:
        if point < weight:
            return address
        point -= weight
    raise AssertionError("unreachable: point < total")
