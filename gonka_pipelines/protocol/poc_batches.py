"""Admission of signed PoC batches: the chain refuses bad signatures, foreign blocks, duplicate nonces and late batches."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from gonka_pipelines.protocol.crypto import MessageKind, verify_each
from gonka_pipelines.protocol.messages import poc_batch_body


class BatchReject(enum.StrEnum):
    BAD_SIGNATURE = "bad_signature"
    WRONG_BLOCK = "wrong_block"
    LATE = "late"
    DUPLICATE_NONCE = "duplicate_nonce"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class PocBatch:
    """What a host signs: its key, the sprint's block hash, and hit nonces with their distances."""

    host: str
    public_key: str
    prev_hash: str
    sequence: int
    nonces: tuple[int, ...]
    distances: tuple[float, ...]
    submitted_at: float
    signature: str = ""

    def body(self, epoch: int) -> dict:
        return poc_batch_body(epoch, self.public_key, self.prev_hash, self.sequence, self.nonces, self.distances)


def admit_batches(batches: Sequence[PocBatch], chain_id: str, epoch: int, prev_hash: str, deadline: float) -> list[BatchReject | None]:
    """Judge batches in (host, sequence) order; a nonce a host already submitted (or repeats) rejects the batch."""
    seen: dict[str, set[int]] = {}
    verdicts: list[BatchReject | None] = []
    signed = iter(verify_each(chain_id, MessageKind.POC_BATCH, [(batch.public_key, batch.body(epoch), batch.signature)
                                                                for batch in batches if len(batch.nonces) == len(batch.distances)]))
    for batch in batches:
        used = seen.setdefault(batch.host, set())
        if len(batch.nonces) != len(batch.distances):
            verdicts.append(BatchReject.MALFORMED)
        elif not next(signed):  # the well-formed batches' signatures, checked on every core
            verdicts.append(BatchReject.BAD_SIGNATURE)
        elif batch.prev_hash != prev_hash:
            verdicts.append(BatchReject.WRONG_BLOCK)
        elif batch.submitted_at > deadline:
            verdicts.append(BatchReject.LATE)
        elif len(set(batch.nonces)) != len(batch.nonces) or used.intersection(batch.nonces):
            verdicts.append(BatchReject.DUPLICATE_NONCE)
        else:
            used.update(batch.nonces)
            verdicts.append(None)
    return verdicts
