"""The columns record encoding over Arrow (hashing.columns_digests) against the protocol's reference encoder
(record_roots.columns_body), byte for byte, for every record kind and every field type it holds."""

from __future__ import annotations

import hashlib
import random

import pyarrow as pa
import pytest

from gonka_pipelines.chain.hashing import columns_digests
from gonka_pipelines.chain.record_roots import BY_KIND
from gonka_pipelines.protocol.crypto import MessageKind
from gonka_pipelines.protocol.record_roots import RECORD_FIELDS, columns_body, columns_prefix

ARROW_TYPES = {"int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "str": pa.string()}
"""Arrow types as the chain's tables hold them (INTEGER, BIGINT, DOUBLE, BOOLEAN, VARCHAR)."""


def _value(rng: random.Random, field_type: str):
    """A random value of a RECORD_FIELDS type: empty texts and lists, non-ASCII text, -0.0 and extreme floats included."""
    if field_type.endswith("[]"):
        return [_value(rng, field_type[:-2]) for _ in range(rng.choice([0, 1, 2, 5]))]
    return {"int32": lambda: rng.randint(-2**31, 2**31 - 1),
            "int64": lambda: rng.randint(-2**63, 2**63 - 1),
            "float64": lambda: rng.choice([-0.0, 0.0, 1e-300, -1.5e17, rng.uniform(-20, 0)]),
            "bool": lambda: rng.random() < 0.5,
            "str": lambda: rng.choice(["", "é-\x0b", "task-" + str(rng.randint(0, 9**9))])}[field_type]()


def _arrow_type(field_type: str) -> pa.DataType:
    return pa.list_(_arrow_type(field_type[:-2])) if field_type.endswith("[]") else ARROW_TYPES[field_type]


def _bodies_and_table(kind: MessageKind, count: int) -> tuple[list[dict], pa.Table]:
    rng = random.Random(f"{kind}-{count}")
    fields = RECORD_FIELDS[kind]
    bodies = [{name: _value(rng, field_type) for name, field_type in fields} for _ in range(count)]
    schema = pa.schema([(name, _arrow_type(field_type)) for name, field_type in fields])
    return bodies, pa.Table.from_pylist(bodies, schema=schema)


@pytest.mark.parametrize("kind", sorted(RECORD_FIELDS))
def test_bulk_digests_equal_the_reference_encoder_for_every_kind(kind: MessageKind):
    """Whole, sliced (offsets not from zero) and in several chunks, every row hashes as its reference body does."""
    bodies, table = _bodies_and_table(kind, 60)
    prefix = b"\x00" + columns_prefix("chain-x", kind)
    expected = [hashlib.sha256(prefix + columns_body(kind, body)).digest() for body in bodies]
    assert columns_digests(prefix, table, RECORD_FIELDS[kind]) == b"".join(expected)
    assert columns_digests(prefix, table.slice(17, 30), RECORD_FIELDS[kind]) == b"".join(expected[17:47])
    chunked = pa.concat_tables([table.slice(0, 25), table.slice(25)])
    assert columns_digests(prefix, chunked, RECORD_FIELDS[kind]) == b"".join(expected)
    assert columns_digests(prefix, table.slice(0, 0), RECORD_FIELDS[kind]) == b""


def test_every_kind_encodes_its_message_fields_in_their_order():
    """RECORD_FIELDS names exactly the signed body's fields (messages.py), in the order the head packs them."""
    assert {kind: tuple(name for name, _ in fields) for kind, fields in RECORD_FIELDS.items()} == {
        kind: spec.body for kind, spec in BY_KIND.items()}


def test_a_null_is_refused_with_the_field_named():
    _, table = _bodies_and_table(MessageKind.TASK_VERDICT, 3)
    nulled = table.set_column(3, "similarity", pa.array([0.5, None, 0.25], pa.float64()))
    with pytest.raises(ValueError, match="record field 'similarity' is null in 1 row"):
        columns_digests(b"", nulled, RECORD_FIELDS[MessageKind.TASK_VERDICT])
    _, results = _bodies_and_table(MessageKind.RESULT, 2)
    holes = results.set_column(3, "top_ids", pa.array([[[1, None]], []], pa.list_(pa.list_(pa.int32()))))
    with pytest.raises(ValueError, match="record field 'top_ids' holds a null item"):
        columns_digests(b"", holes, RECORD_FIELDS[MessageKind.RESULT])


def test_wider_integers_are_narrowed_only_where_they_fit():
    """Results held as int64 lists (a polars frame built from Python lists) hash as the int32 the chain stores; a
    token id past int32 is refused, by the bulk encoder and the reference alike."""
    bodies, table = _bodies_and_table(MessageKind.RESULT, 5)
    wide = table.set_column(2, "output_tokens", table.column("output_tokens").cast(pa.list_(pa.int64())))
    prefix, fields = b"\x00", RECORD_FIELDS[MessageKind.RESULT]
    assert columns_digests(prefix, wide, fields) == columns_digests(prefix, table, fields)
    too_wide = wide.set_column(2, "output_tokens", pa.array([[2**31]] * 5, pa.list_(pa.int64())))
    with pytest.raises(ValueError, match="no int32"):
        columns_digests(prefix, too_wide, fields)
    with pytest.raises(ValueError, match="'output_tokens' \\(int32\\[\\]\\) cannot hold"):
        columns_body(MessageKind.RESULT, {**bodies[0], "output_tokens": [2**31]})


def test_the_layout_is_the_documented_one():
    """A result: head (u32 byte counts of both texts, u32 counts of the three lists), then the texts' bytes, the
    output tokens as int32, the top-k lists' u32 lengths and their ids, then their lengths and log-probs as float64."""
    import struct

    body = {"task_id": "t", "executor": "ex", "output_tokens": [5], "top_ids": [[1, 2]], "top_logprobs": [[-0.5, -1.0]]}
    assert columns_body(MessageKind.RESULT, body) == (
        struct.pack("<IIIII", 1, 2, 1, 1, 1) + b"t" + b"ex" + struct.pack("<i", 5) + struct.pack("<Iii", 2, 1, 2)
        + struct.pack("<Idd", 2, -0.5, -1.0))


def test_rows_split_over_threads_hash_as_one_loop(monkeypatch: pytest.MonkeyPatch):
    """Past THREADED_ROWS rows a thread a batch is hashed on a thread per core, in contiguous parts: the same digests,
    in row order, with 1 part or 4 (a sliced batch too)."""
    from gonka_pipelines.chain import hashing
    from gonka_pipelines.protocol import threads

    bodies, table = _bodies_and_table(MessageKind.RESULT, 61)
    prefix, fields = b"\x00", RECORD_FIELDS[MessageKind.RESULT]
    expected = b"".join(hashlib.sha256(prefix + columns_body(MessageKind.RESULT, body)).digest() for body in bodies)
    monkeypatch.setattr(hashing, "THREADED_ROWS", 7)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    assert columns_digests(prefix, table, fields) == expected
    assert columns_digests(prefix, table.slice(5, 40), fields) == expected[5 * 32:45 * 32]
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 1)
    assert columns_digests(prefix, table, fields) == expected
