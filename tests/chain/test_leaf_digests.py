"""Leaves written and hashed in C from the columns DuckDB streams (hashing.json_digests) are byte for byte the reference
leaves of canonical_bytes, in key order, over every column type a block commits to, edge values included."""

from __future__ import annotations

import math

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gonka_pipelines.chain.commitments import Commitment, leaf_digests
from gonka_pipelines.protocol.crypto import canonical_bytes
from gonka_pipelines.protocol.merkle import leaf_digest

COLUMNS = {
    "a_int": "INTEGER", "b_big": "BIGINT", "c_bool": "BOOLEAN", "d_real": "DOUBLE", "e_text": "VARCHAR", "f_blob": "BLOB",
    "g_ints": "INTEGER[]", "h_bigs": "BIGINT[]", "i_bools": "BOOLEAN[]", "j_reals": "DOUBLE[]", "k_texts": "VARCHAR[]",
    "l_int_grid": "INTEGER[][]", "m_real_grid": "DOUBLE[][]",
}
"""Every type a committed column has (checked against the chain's schema below), under names that sort apart."""
TABLE = Commitment("every_type", "every_type", "row_key", tuple(COLUMNS))

EDGE_REALS = [0.0, -0.0, 1.0, -1.5, 0.1, 1e-4, 9.999999999999999e-05, 1e-5, 3.008264692815159e-05, 1e-6, 1e-7, 5e-324,
              2.2250738585072014e-308, 1e15, 9999999999999998.0, 1e16, 1.5e16, 1e22, 1.7976931348623157e308,
              123456789012345678.0, -2.5e-9, 0.3333333333333333, -3.2e-05]
EDGE_TEXT = ["", "plain", "é ü 中文 🙂", "\u2028\u2029\x7f\x80\ufeff", "".join(chr(i) for i in range(32)), 'quote " and \\',
             "slash / and \\u000b written out", "null", "0.00001", "1e-6", "\x0b", "\x1f", "tab\tnew\nline\rreturn"]

reals = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(EDGE_REALS))
texts = st.one_of(st.text(max_size=12), st.sampled_from(EDGE_TEXT))
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)


def nullable(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


ROWS = st.fixed_dictionaries({
    "a_int": nullable(int32), "b_big": nullable(int64), "c_bool": nullable(st.booleans()), "d_real": nullable(reals),
    "e_text": nullable(texts), "f_blob": nullable(st.binary(max_size=8)),
    "g_ints": nullable(st.lists(nullable(int32), max_size=4)), "h_bigs": st.lists(int64, max_size=4),
    "i_bools": st.lists(st.booleans(), max_size=3), "j_reals": nullable(st.lists(nullable(reals), max_size=5)),
    "k_texts": st.lists(texts, max_size=3), "l_int_grid": st.lists(st.lists(int32, max_size=3), max_size=3),
    "m_real_grid": st.lists(nullable(st.lists(reals, max_size=3)), max_size=3),
})


def table_of(rows: list[dict]) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute(f"CREATE TABLE every_type (row_key VARCHAR, epoch BIGINT, "
                       f"{', '.join(f'{name} {kind}' for name, kind in COLUMNS.items())})")
    connection.executemany(f"INSERT INTO every_type VALUES ({', '.join('?' * (len(COLUMNS) + 2))})",
                           [[f"{i:05d}", 1, *(row[name] for name in COLUMNS)] for i, row in enumerate(rows)])
    return connection


def reference(rows: list[dict]) -> list[bytes]:
    """The leaf row_leaf would give: BLOBs as lowercase hex, the commitment's name as the tag."""
    return [leaf_digest(canonical_bytes({"commitment": TABLE.name, **row,
                                         "f_blob": None if row["f_blob"] is None else row["f_blob"].hex()}))
            for row in rows]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ROWS, min_size=1, max_size=25))
def test_sql_leaves_equal_the_reference_encoder_over_every_column_type(rows):
    assert leaf_digests(table_of(rows), TABLE, 1) == b"".join(reference(rows))


def test_edge_values_agree_with_the_reference():
    """Floats at repr's switch to exponents and at the ends of the doubles, and text with every control character,
    quotes, backslashes and non-ASCII, alone and in lists: each leaf is the reference's."""
    base = {"a_int": 1, "b_big": 2**63 - 1, "c_bool": True, "d_real": 0.5, "e_text": "x", "f_blob": b"\x00\xff",
            "g_ints": [1, None], "h_bigs": [-(2**63)], "i_bools": [False], "j_reals": [0.25], "k_texts": ["k"],
            "l_int_grid": [[1], []], "m_real_grid": [[0.5, 2.0], None]}
    rows = ([base] + [{**base, "d_real": value} for value in EDGE_REALS] + [{**base, "e_text": text} for text in EDGE_TEXT]
            + [{**base, "m_real_grid": [[value]]} for value in EDGE_REALS] + [{**base, "k_texts": [text]} for text in EDGE_TEXT])
    assert leaf_digests(table_of(rows), TABLE, 1) == b"".join(reference(rows))


@pytest.mark.parametrize("column, value", [("d_real", math.nan), ("d_real", math.inf), ("j_reals", [1.0, -math.inf]),
                                           ("m_real_grid", [[math.nan]])])
def test_non_finite_floats_are_refused_as_canonical_bytes_refuses_them(column, value):
    row = {name: None for name in COLUMNS} | {"h_bigs": [], "i_bools": [], "k_texts": [], "l_int_grid": [], "m_real_grid": [],
                                               column: value}
    with pytest.raises(ValueError, match="non-finite"):
        leaf_digests(table_of([row]), TABLE, 1)


def test_a_column_named_commitment_replaces_the_tag_as_in_the_reference():
    """seed_commitments has a `commitment` column: the leaf holds its value under that key, as row_leaf's dict does."""
    connection = duckdb.connect()
    connection.execute("CREATE TABLE seeds (host VARCHAR, epoch BIGINT, commitment VARCHAR)")
    connection.execute("INSERT INTO seeds VALUES ('h1', 3, 'c1'), ('h0', 3, 'c0'), ('h2', 4, 'c2')")
    seeds = Commitment("seeds", "seeds", "host", ("host", "commitment"))
    assert leaf_digests(connection, seeds, 3) == b"".join(leaf_digest(canonical_bytes({"commitment": c, "host": h}))
                                                          for h, c in (("h0", "c0"), ("h1", "c1")))


def test_leaves_come_in_key_order_across_streamed_batches(monkeypatch):
    """Rows stored out of key order, streamed in batches of 3: the digests are sorted by key, each in its own place."""
    from gonka_pipelines.chain import commitments

    monkeypatch.setattr(commitments, "LEAF_BATCH_ROWS", 3)
    base = {name: None for name in COLUMNS} | {"h_bigs": [], "i_bools": [], "k_texts": [], "l_int_grid": [], "m_real_grid": []}
    rows = [base | {"a_int": i, "d_real": 1e-7 if i % 4 == 0 else 0.5, "e_text": "\x0b" if i % 5 == 0 else "x"}
            for i in range(20)]
    connection = table_of(rows)
    connection.execute("CREATE TABLE shuffled AS SELECT * FROM every_type ORDER BY hash(row_key)")
    connection.execute("DROP TABLE every_type")
    connection.execute("ALTER TABLE shuffled RENAME TO every_type")
    stored = [key for (key,) in connection.execute("SELECT row_key FROM every_type").fetchall()]
    assert stored != sorted(stored)
    assert leaf_digests(connection, TABLE, 1) == b"".join(reference(rows))


def test_the_types_above_are_every_type_a_block_commits_to(genesis_layout):
    from gonka_pipelines.chain.commitments import COMMITMENTS

    with duckdb.connect(str(genesis_layout.database), read_only=True) as connection:
        committed = {kind for c in COMMITMENTS for name, kind in connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [c.table]).fetchall()
            if name in c.columns}
    assert committed == set(COLUMNS.values())


KEY_TEXT = st.one_of(st.text(max_size=20), st.sampled_from(["", "\x00", "a", "a\x00", "a\x00b", "abcdefgh", "abcdefgh\x00",
                                                             "abcdefghi", "abcdefgi", "é", "\uffff", "🙂"]))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(keys=st.lists(KEY_TEXT, unique=True, max_size=40), tied=st.integers(0, 30), cut=st.integers(0, 3))
def test_text_keys_are_ranked_as_arrow_sorts_text(keys, tied, cut):
    """sorted_positions' 8-byte ranking with ties sorted as text gives Arrow's bytewise order: keys of every length
    (NUL bytes and non-ASCII included), runs sharing their first 8 bytes, a sliced column of two chunks."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from gonka_pipelines.chain.commitments import sorted_positions

    keys = keys + [f"lineage:{i:04d}" for i in range(tied)]  # share 8 bytes: mostly tied when tied is large
    column = pa.chunked_array([pa.array(part, pa.string()) for part in (keys[:len(keys) // 2], keys[len(keys) // 2:])]).slice(cut)
    table = pa.table({"k": column})
    expected = pc.sort_indices(column).to_numpy().tolist()
    assert sorted_positions(table, ["k"]).tolist() == expected
    assert [table["k"][i].as_py() for i in expected] == sorted(keys[cut:], key=lambda k: k.encode())


def test_hash_ids_rank_by_their_first_bytes_and_ties_by_the_rest():
    """A thousand hex ids of which pairs share their first 8 characters (as a million SHA-256 ids do ~120 times)."""
    import hashlib

    import pyarrow as pa

    from gonka_pipelines.chain.commitments import sorted_positions

    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(1000)]
    ids += [ids[i][:8] + ids[i + 1][8:] for i in range(0, 200, 2)]  # 100 ids tied with another on their first 8 bytes
    order = sorted_positions(pa.table({"k": ids}), ["k"]).tolist()
    assert [ids[i] for i in order] == sorted(ids)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(values=st.lists(st.integers(-2**63, 2**63 - 1), max_size=30), runs=st.booleans())
def test_integer_keys_in_order_or_not_are_ranked_as_a_stable_sort(values, runs):
    """An integer key already in order (record leaves by position) is taken as it lies, ties in their order; any
    other is sorted as Arrow sorts it (stably)."""
    import numpy as np
    import pyarrow as pa

    from gonka_pipelines.chain.commitments import sorted_positions

    values = sorted(values + values[:3]) if runs else values
    table = pa.table({"k": pa.array(values, pa.int64())})
    assert sorted_positions(table, ["k"]).tolist() == np.argsort(np.array(values, dtype=np.int64), kind="stable").tolist()


def test_equal_text_keys_keep_their_row_order_as_a_stable_sort():
    """Keys ranked by their first 8 bytes, then ties by text: two rows of the same key come out in row order, as Arrow's
    stable sort leaves them, whatever order the unstable integer sort put them in."""
    import hashlib
    import random

    import pyarrow as pa
    import pyarrow.compute as pc

    from gonka_pipelines.chain.commitments import sorted_positions

    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    ids += random.Random(3).sample(ids, 300)  # 300 keys twice, the copies far apart
    random.Random(4).shuffle(ids)
    column = pa.chunked_array([pa.array(ids[:1000]), pa.array(ids[1000:])])
    assert sorted_positions(pa.table({"k": column}), ["k"]).tolist() == pc.sort_indices(column).to_numpy().tolist()
