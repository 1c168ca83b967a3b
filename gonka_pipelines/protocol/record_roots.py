"""One signature per signer and epoch over many records: an executor's results, a validator's verdicts.

Each record's leaf is the message it would be signed as alone (version, chain id, kind, canonical body), so the
domain separation of single signatures carries over; the signer signs the Merkle root over its records in key order,
and a record's inclusion proof plus that one signature stand for the record's own signature (ours: Gonka signs each
inference response; a million signatures per epoch are what the root saves).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gonka_pipelines.protocol.crypto import KeyPair, MessageKind, message_bytes, sign_each, verify_each
from gonka_pipelines.protocol.merkle import leaf_digest, merkle_root_of_digests


def record_leaf(chain_id: str, kind: MessageKind, body: Mapping[str, Any]) -> bytes:
    """A record's 32-byte leaf: the hash of the message a lone signature over it would cover."""
    return leaf_digest(message_bytes(chain_id, kind, dict(body)))


def records_root_body(epoch: int, signer: str, kind: MessageKind, root: str, records: int) -> dict:
    """What a signer signs, once per epoch and record kind: the root over its records of that kind and their count."""
    return {"epoch": epoch, "signer": signer, "kind": MessageKind(kind).value, "root": root, "records": records}


def leaves_root_body(epoch: int, signer: str, kind: MessageKind, leaves: Sequence[bytes]) -> dict:
    """What a signer signs over its records given as leaves (record_leaf, in key order): their Merkle root and count."""
    return records_root_body(epoch, signer, kind, merkle_root_of_digests(list(leaves)), len(leaves))


def signed_roots(chain_id: str, signings: Sequence[tuple[KeyPair, dict]]) -> list[dict[str, Any]]:
    """record_roots rows: each root body (leaves_root_body) with its signer's signature, signed on a thread per core."""
    signatures = sign_each(chain_id, MessageKind.RECORDS_ROOT, signings)
    return [{**body, "signature": signature} for (_, body), signature in zip(signings, signatures)]


def sign_records(key: KeyPair, chain_id: str, epoch: int, signer: str, kind: MessageKind,
                 bodies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The record_roots row of one signer's records (bodies in key order)."""
    return signed_roots(chain_id, [(key, leaves_root_body(epoch, signer, kind, [record_leaf(chain_id, kind, body) for body in bodies]))])[0]


def root_signature_verifies(public_key: str, chain_id: str, row: Mapping[str, Any]) -> bool:
    """Whether a record_roots row's signature is its signer's over its root, count, epoch and kind."""
    return root_signatures_verify(chain_id, [(public_key, row)])[0]


def root_signatures_verify(chain_id: str, signed: Sequence[tuple[str, Mapping[str, Any]]]) -> list[bool]:
    """root_signature_verifies of each (public key, record_roots row), checked on a thread per core (a row of a kind
    no record is signed as fails)."""
    bodies = [_root_body(row) for _, row in signed]
    verdicts = iter(verify_each(chain_id, MessageKind.RECORDS_ROOT, [(key, body, row["signature"])
                                                                     for (key, row), body in zip(signed, bodies) if body is not None]))
    return [body is not None and next(verdicts) for body in bodies]


def _root_body(row: Mapping[str, Any]) -> dict | None:
    """The body a record_roots row's signature covers, rebuilt from the row; None for an unknown kind."""
    try:
        kind = MessageKind(row["kind"])
    except ValueError:
        return None
    return records_root_body(row["epoch"], row["signer"], kind, row["root"], row["records"])
