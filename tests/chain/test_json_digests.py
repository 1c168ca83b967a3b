"""json_digests writes each row's canonical JSON in C from the columns' buffers and hashes it, json_texts returns it:
byte for byte canonical_bytes, whatever the columns' layout (slices, chunks, a list's sliced items, text views, small
integers) and past the rows at which it hashes on threads; a NaN or an infinity is refused as canonical_bytes refuses
it."""

from __future__ import annotations

import hashlib
import random

import pyarrow as pa
import pytest

from gonka_pipelines.chain.hashing import THREADED_ROWS, NonFiniteFloat, json_digests, json_texts
from gonka_pipelines.protocol import _canonical
from gonka_pipelines.protocol.crypto import canonical_bytes

PREFIX = b"\x00leaf|"
TEXTS = [None, "", "plain", 'quote " and \\ backslash', "".join(chr(i) for i in range(32)) + "\x7f", "é ü 中文 🙂",
         "\u2028\u2029\ufeff"]
FLOATS = [None, 0.0, -0.0, 0.5, -2.3025850929940455, 1e-4, 1e-5, 5e-324, 1e16, 1.7976931348623157e308, 123.0]


def expected(table: pa.Table) -> bytes:
    return b"".join(hashlib.sha256(PREFIX + canonical_bytes(row)).digest() for row in table.to_pylist())


def every_type(rows: int, seed: int = 5) -> pa.Table:
    """Columns of each type json_digests writes, nulls among the values and the lists, under keys that need sorting
    and escaping."""
    rng = random.Random(seed)

    def floats() -> list:
        return [rng.choice(FLOATS[1:]) for _ in range(rng.randrange(4))]

    return pa.table({
        "z_bool": pa.array([rng.choice([True, False, None]) for _ in range(rows)]),
        "int32": pa.array([rng.choice([None, 0, -7, 2**31 - 1, -(2**31)]) for _ in range(rows)], pa.int32()),
        "int64": pa.array([rng.choice([None, 0, 2**63 - 1, -(2**63)]) for _ in range(rows)], pa.int64()),
        "float": pa.array([rng.choice(FLOATS) for _ in range(rows)], pa.float64()),
        "text": pa.array([rng.choice(TEXTS) for _ in range(rows)], pa.string()),
        "Texts": pa.array([rng.choice([None, [], [rng.choice(TEXTS[1:]), None]]) for _ in range(rows)], pa.large_list(pa.large_string())),
        "grid": pa.array([rng.choice([None, [], [floats(), None, floats()]]) for _ in range(rows)], pa.list_(pa.list_(pa.float64()))),
        "ids": pa.array([[rng.randrange(-9, 9) for _ in range(rng.randrange(5))] for _ in range(rows)], pa.list_(pa.int32())),
        'key "quoted"': pa.array([rng.choice(TEXTS[1:]) for _ in range(rows)], pa.string_view()),
        "small": pa.array([rng.randrange(-9, 9) for _ in range(rows)], pa.int16()),
    })


def test_every_type_is_written_as_canonical_bytes_in_any_layout():
    table = every_type(600)
    keys = table.column_names
    assert json_digests(PREFIX, table, keys) == expected(table)
    assert json_digests(PREFIX, table.slice(7, 300).combine_chunks().to_batches()[0], keys) == expected(table.slice(7, 300))
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 250), table.slice(251, 0), table.slice(251)])
    assert json_digests(PREFIX, chunked, keys) == expected(table)
    assert json_digests(PREFIX, table.slice(0, 0), keys) == b""


def test_a_lists_sliced_items_are_read_from_their_own_offset():
    items = pa.array([9.5, 1.5, 2.5, 3.5, 4.5]).slice(1)
    lists = pa.ListArray.from_arrays(pa.array([0, 2, 2, 4], pa.int32()), items)
    table = pa.table({"values": lists})
    assert json_digests(PREFIX, table, ["values"]) == expected(table)


def test_rows_hashed_on_threads_keep_their_order():
    count = 2 * THREADED_ROWS + 11
    table = pa.concat_tables([pa.table({"row": pa.array(range(start, min(start + 9_973, count)), pa.int64()),
                                        "half": pa.array([i / 2 for i in range(start, min(start + 9_973, count))])})
                              for start in range(0, count, 9_973)])
    assert json_digests(PREFIX, table, ["row", "half"]) == expected(table)


@pytest.mark.parametrize("column", [pa.array([1.0, float("nan")]), pa.array([[1.0], [2.0, -float("inf")]])])
def test_a_non_finite_float_is_refused_with_its_row_and_key(column):
    with pytest.raises(ValueError, match='row 1\'s "value" holds a non-finite float'):
        json_digests(PREFIX, pa.table({"value": column}), ["value"])


def test_a_non_finite_float_is_named_by_its_row_in_the_whole_table():
    """Rows of later chunks are numbered from the table's first, so the error points at the row as the caller holds it."""
    values = [float(i) for i in range(12)]
    values[11] = float("inf")
    table = pa.concat_tables([pa.table({"value": values[:5]}), pa.table({"value": values[5:9]}), pa.table({"value": values[9:]})])
    for write in (json_digests, json_texts):
        with pytest.raises(NonFiniteFloat, match='row 11\'s "value"'):
            write(PREFIX, table, ["value"])


def test_keys_must_be_distinct_text():
    with pytest.raises(ValueError, match="distinct text"):
        json_digests(PREFIX, pa.table({"a": [1], "b": [2]}), ["a", "a"])


def test_a_column_description_past_any_buffer_is_refused():
    """The C reader's own checks (pyarrow never describes a column so): an offset whose bytes would overflow, and a
    description that is not a tuple."""
    with pytest.raises(ValueError, match="offset"):
        _canonical.json_digests(b"", 0, 1, 0, (b'"a"',), [(2, 2**61 - 100_000, 100_001, None, None, b"\0" * 8, None)])
    with pytest.raises(TypeError, match="not a tuple"):
        _canonical.json_digests(b"", 0, 1, 0, (b'"a"',), [[2, 0, 1, None, None, b"\0" * 8, None]])


def test_a_type_without_canonical_json_is_refused():
    with pytest.raises(TypeError, match="no canonical JSON for a column of binary"):
        json_digests(PREFIX, pa.table({"raw": pa.array([b"\x00"])}), ["raw"])
    with pytest.raises(ValueError, match="2 keys for 1 columns"):
        json_digests(PREFIX, pa.table({"raw": pa.array([1])}), ["raw", "other"])


def test_texts_are_the_prefix_and_canonical_bytes_of_each_row():
    table = pa.concat_tables([every_type(40, seed=9).slice(3, 20), every_type(40, seed=9).slice(23)])
    assert json_texts(PREFIX, table, table.column_names) == [PREFIX + canonical_bytes(row) for row in table.to_pylist()]
    assert json_texts(PREFIX, table.slice(0, 0), table.column_names) == []
    with pytest.raises(ValueError, match="non-finite"):
        json_texts(PREFIX, pa.table({"value": [float("nan")]}), ["value"])
