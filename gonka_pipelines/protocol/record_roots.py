"""One signature per signer and epoch over many records: an executor's results, a validator's verdicts.

Each record's leaf is domain-separated like a lone signature over it (version, chain id, kind, body), so a leaf of one
kind or chain never stands for another; the signer signs the Merkle root over its records in key order, and a record's
inclusion proof plus that one signature stand for the record's own signature (ours: Gonka signs each inference
response; a million signatures per epoch are what the root saves). The body is encoded as the chain's params say
(tasks.record_encoding): "json", the canonical JSON a lone signature covers, or "columns", a binary layout that is
hashed straight from Arrow columns (the top-k log-probs of a million results are not written out as decimal text).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from gonka_pipelines.protocol.crypto import KeyPair, MessageKind, message_bytes, sign_each, verify_each
from gonka_pipelines.protocol.merkle import DIGEST_BYTES, leaf_digest, merkle_root_of_digests

RECORD_ENCODINGS = ("json", "columns")
"""How a record's body is encoded in its leaf (params: tasks.record_encoding); chains whose params predate the choice
used json."""

COLUMNS_VERSION = "gonka/records-columns/v1"
"""The version that starts every leaf of the columns encoding (json leaves start with crypto.ENCODING_VERSION)."""

RECORD_FIELDS: dict[MessageKind, tuple[tuple[str, str], ...]] = {
    MessageKind.RESULT: (("task_id", "str"), ("executor", "str"), ("output_tokens", "int32[]"), ("top_ids", "int32[][]"),
                         ("top_logprobs", "float64[][]")),
    MessageKind.TASK_VERDICT: (("epoch", "int64"), ("task_id", "str"), ("validator", "str"), ("similarity", "float64"),
                               ("passed", "bool"), ("reason", "str")),
    MessageKind.TRAINING_RESULT: (("task_id", "str"), ("executor", "str"), ("version", "str"), ("checkpoint_steps", "int32[]"),
                                  ("checkpoints", "str[]"), ("losses", "float64[]"), ("tokens", "int64")),
    MessageKind.TRAINING_VERDICT: (("epoch", "int64"), ("task_id", "str"), ("validator", "str"), ("first_step", "int32"),
                                   ("last_step", "int32"), ("passed", "bool"), ("eval_loss", "float64"), ("reason", "str")),
}
"""Each record kind's body fields in order, with their types as the chain's tables hold them: int32, int64, float64,
bool, str (UTF-8), and lists (`[]`) or lists of lists (`[][]`) of them (no list of lists of text)."""

FIXED_FORMATS = {"int32": "i", "int64": "q", "float64": "d", "bool": "?"}
"""The struct format of a fixed-size item, little-endian in every encoding."""


def columns_prefix(chain_id: str, kind: MessageKind) -> bytes:
    """What precedes a record's body in the columns encoding: its version, chain id and kind."""
    return f"{COLUMNS_VERSION}|{chain_id}|{MessageKind(kind).value}|".encode()


def columns_body(kind: MessageKind, body: Mapping[str, Any]) -> bytes:
    """A record's body in the columns encoding (the reference the bulk encoder over Arrow must match byte for byte):
    a fixed-width head, each field in order as its int32, int64 or float64, a byte for a bool, or a u32 count of a
    text's bytes or a list's items; then each text or list field's contents in order: a text's bytes; a list's items; a list of
    texts' u32 byte lengths, then their bytes; a list of lists' u32 counts, then all their items."""
    head: list[bytes] = []
    tail: list[bytes] = []
    for name, field_type in RECORD_FIELDS[MessageKind(kind)]:
        try:
            _encode_field(field_type, body[name], head, tail)
        except (struct.error, TypeError, AttributeError, KeyError) as error:
            raise ValueError(f"{MessageKind(kind).value} record field {name!r} ({field_type}) cannot hold "
                             f"{body.get(name)!r}: {error}") from error
    return b"".join(head + tail)


def _encode_field(field_type: str, value: Any, head: list[bytes], tail: list[bytes]) -> None:
    """Append one field's head part and contents (columns_body)."""
    item, depth = field_type.rstrip("[]"), field_type.count("[]")
    if depth == 0 and item != "str":
        _check_bools(item, [value])
        head.append(struct.pack("<" + FIXED_FORMATS[item], value))  # struct refuses a float for an int, or one past its range
        return
    if depth == 0:
        data = value.encode()
        head.append(struct.pack("<I", len(data)))
        tail.append(data)
        return
    head.append(struct.pack("<I", len(value)))
    if depth == 2:
        tail.append(struct.pack(f"<{len(value)}I", *map(len, value)))
        value = [element for inner in value for element in inner]
    if item == "str":
        texts = [text.encode() for text in value]
        tail += [struct.pack(f"<{len(texts)}I", *map(len, texts)), *texts]
    else:
        _check_bools(item, value)
        tail.append(struct.pack(f"<{len(value)}{FIXED_FORMATS[item]}", *value))


def _check_bools(item: str, values: Sequence[Any]) -> None:
    """A bool field holds bools only: struct would pack any value's truth as one."""
    for value in values if item == "bool" else ():
        if not isinstance(value, bool):
            raise TypeError(f"a {type(value).__name__} is not a bool")


def record_leaf(chain_id: str, kind: MessageKind, body: Mapping[str, Any], encoding: str) -> bytes:
    """A record's 32-byte leaf in the chain's record encoding: json, the hash of the message a lone signature over it
    would cover; columns, the hash of its columns_prefix and columns_body."""
    if encoding == "json":
        return leaf_digest(message_bytes(chain_id, kind, dict(body)))
    if encoding == "columns":
        return leaf_digest(columns_prefix(chain_id, kind) + columns_body(kind, body))
    raise ValueError(f"unknown record encoding {encoding!r}; encodings: {', '.join(RECORD_ENCODINGS)}")


def records_root_body(epoch: int, signer: str, kind: MessageKind, root: str, records: int) -> dict:
    """What a signer signs, once per epoch and record kind: the root over its records of that kind and their count."""
    return {"epoch": epoch, "signer": signer, "kind": MessageKind(kind).value, "root": root, "records": records}


def leaves_root_body(epoch: int, signer: str, kind: MessageKind, leaves: bytes | memoryview) -> dict:
    """What a signer signs over its records given as leaves (record_leaf, in key order, end to end): their Merkle root
    and count."""
    return records_root_body(epoch, signer, kind, merkle_root_of_digests(leaves), len(leaves) // DIGEST_BYTES)


def signed_roots(chain_id: str, signings: Sequence[tuple[KeyPair, dict]]) -> list[dict[str, Any]]:
    """record_roots rows: each root body (leaves_root_body) with its signer's signature, signed on a thread per core."""
    signatures = sign_each(chain_id, MessageKind.RECORDS_ROOT, signings)
    return [{**body, "signature": signature} for (_, body), signature in zip(signings, signatures)]


def sign_records(key: KeyPair, chain_id: str, epoch: int, signer: str, kind: MessageKind,
                 bodies: Sequence[Mapping[str, Any]], encoding: str) -> dict[str, Any]:
    """The record_roots row of one signer's records (bodies in key order, leaves in the record encoding)."""
    leaves = b"".join(record_leaf(chain_id, kind, body, encoding) for body in bodies)
    return signed_roots(chain_id, [(key, leaves_root_body(epoch, signer, kind, leaves))])[0]


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
