"""hash_each: ids of many rows hashed over Arrow columns, byte for byte those of hash_value."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gonka_pipelines.chain.hashing import THREADED_ROWS, hash_each
from gonka_pipelines.protocol.crypto import hash_value
from gonka_pipelines.protocol.records import TransferKind

_CELLS = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.text(max_size=12),
                   st.text(alphabet="0123456789abcdef", min_size=1, max_size=64), st.sampled_from(["100%", "%d", "%s", "null"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_CELLS, st.lists(st.integers(min_value=-2**70, max_value=2**70), min_size=3, max_size=3),
                          st.lists(st.text(alphabet="0123456789abcdef%", max_size=8), min_size=3, max_size=3),
                          st.lists(st.text(max_size=6), min_size=3, max_size=3),
                          st.lists(st.booleans(), min_size=3, max_size=3)), min_size=1, max_size=4))
def test_hash_each_is_hash_value_of_every_row(columns):
    columns = [*columns, ["x", "y", "z"]]  # at least one column of values
    rows = [[c if isinstance(c, (str, int)) else c[i] for c in columns] for i in range(3)]
    assert hash_each(*columns).to_pylist() == [hash_value(row) for row in rows]


def test_hash_each_needs_a_column_of_values():
    assert hash_each(TransferKind.ESCROW, ["ab", "cd"]).to_pylist() == [hash_value([TransferKind.ESCROW, t]) for t in ("ab", "cd")]
    assert hash_each("fee", 7, ["a\"b", "c"], [1, 2]).to_pylist() == [hash_value(["fee", 7, "a\"b", 1]), hash_value(["fee", 7, "c", 2])]
    with pytest.raises(ValueError, match="scalars only"):
        hash_each("fee", 7)
    with pytest.raises(ValueError, match="differ in length: 1, 2 rows"):
        hash_each(pa.array(["a"]), pa.array(["b", "c"]))


def test_hash_each_takes_arrow_and_polars_columns():
    """The columns the stages pass (Arrow arrays, chunked or sliced, and polars series) hash as their Python values do,
    and text that needs escaping goes through hash_value."""
    ids, names = ["ab", "cd", "ef"], ["plain", 'quo"te', "é"]
    expected = [hash_value(["fee", 7, i, n, k]) for i, n, k in zip(ids, names, [1, 2, 3])]
    assert hash_each("fee", 7, pa.array(ids), pl.Series(names), pa.chunked_array([[1], [2, 3]])).to_pylist() == expected
    assert hash_each("fee", 7, pa.array(["x", *ids]).slice(1), pl.Series(names), [1, 2, 3]).to_pylist() == expected
    assert hash_each(TransferKind.ESCROW, pa.array([], pa.string())).to_pylist() == []


def test_hash_each_writes_every_character_as_hash_value_does():
    """Text of each of the first 256 characters (the control ones, the quote, the backslash, DEL, Latin-1), alone and
    among plain text: hashed in C only when every byte is one JSON writes as it is, else through hash_value."""
    texts = [chr(code) for code in range(256)] + [f"ab{chr(code)}cd" for code in range(256)]
    assert hash_each("fee", texts, 3).to_pylist() == [hash_value(["fee", text, 3]) for text in texts]
    plain = [chr(code) for code in range(0x20, 0x7f) if chr(code) not in '"\\'] + [""]
    assert hash_each(plain, "x").to_pylist() == [hash_value([text, "x"]) for text in plain]


def test_hash_each_of_many_rows_hashes_on_threads_in_row_order():
    """Past THREADED_ROWS rows per thread the rows are hashed in ranges on a thread each: every row still gets its own
    hash, in order, across the ranges' edges."""
    count = 2 * THREADED_ROWS + 7
    ids = pa.array([f"{i:08x}" for i in range(count)], pa.large_string()).slice(3)
    assert hash_each("refund", ids, 9).to_pylist() == [hash_value(["refund", f"{i:08x}", 9]) for i in range(3, count)]
