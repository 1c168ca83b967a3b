"""Hashes of many rows at once over Arrow columns, in C: ids built from columns (hash_each: a million transfers an
epoch), and rows' canonical JSON objects (json_digests: Merkle leaves)."""

from __future__ import annotations

import binascii
import bisect
from collections.abc import Sequence
from itertools import accumulate
from typing import TypeAlias

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from gonka_pipelines.protocol import _canonical, _sha256
from gonka_pipelines.protocol.crypto import canonical_row_bytes, hash_value
from gonka_pipelines.protocol.threads import on_threads


def _plain(text: np.ndarray) -> bool:
    """Whether every byte is one JSON writes as it is: printable ASCII but the quote and the backslash (a control
    character or a non-ASCII byte is written otherwise, which hash_each cannot do): in uint8 arithmetic, a few passes
    over the bytes rather than a table look-up each."""
    return bool(((text - np.uint8(0x20)) < np.uint8(0x5f)).all() and not (text == 0x22).any() and not (text == 0x5c).any())

Column: TypeAlias = pa.Array | pa.ChunkedArray | pl.Series | Sequence[str] | Sequence[int]
"""A column of values: Arrow, polars, or a Python sequence."""


def hash_each(*columns: Column | str | int) -> pa.Array:
    """hash_value([a, b, ...]) of each row of the columns (a scalar is the same in every row), byte for byte, as a column
    of hex: when every column holds integers or text that needs no escaping, each row's JSON is hashed in C where its
    pieces lie (_sha256.pieces: the columns' buffers between the constant brackets, commas, quotes and scalars, no
    joined text and no Python object a row: ids of a million transfers an epoch); any other column sends the rows
    through hash_value."""
    varying = [column for column in columns if not isinstance(column, (str, int))]
    if not varying:
        raise ValueError("hash_each needs a column of values (sequences); it was given scalars only")
    constants: list[str] = []  # the JSON text before each column's values
    values: list[tuple[np.ndarray, memoryview | bytes]] = []  # each column's values as text (_text_span)
    constant = "["
    for index, column in enumerate(columns):
        constant += "," if index else ""
        if isinstance(column, (str, int)):
            constant += canonical_row_bytes(column).decode()
            continue
        value = _json_value(_arrow_column(column))
        if value is None:
            rows = len(varying[0])
            python_values = [[c] * rows if isinstance(c, (str, int)) else _python_values(c) for c in columns]
            return pa.array([hash_value(list(row)) for row in zip(*python_values)], pa.large_string())
        quote, span = value
        constants.append(constant + quote)
        values.append(span)
        constant = quote
    lengths = [len(offsets) - 1 for offsets, _ in values]
    count = lengths[0]
    if any(length != count for length in lengths):
        raise ValueError(f"hash_each's columns differ in length: {', '.join(map(str, lengths))} rows")
    parts: list[tuple[np.ndarray, memoryview | bytes]] = []  # (offsets, data): each column's values, then the text after
    for span, after in zip(values, [*constants[1:], constant + "]"]):
        parts += [span, _repeated(after.encode(), count)]
    digests = _pieces_on_threads(constants[0].encode(), count, parts)
    return pa.Array.from_buffers(pa.large_string(), count, [
        None, pa.py_buffer(np.arange(0, 64 * count + 1, 64, dtype=np.int64)), pa.py_buffer(binascii.hexlify(digests))])


def _repeated(text: bytes, count: int) -> tuple[np.ndarray, bytes]:
    """The same (non-empty) text in each of `count` rows, as a part of _sha256.pieces: (offsets, data)."""
    return np.arange(0, len(text) * (count + 1), len(text), dtype=np.int64), text * count


def _arrow_column(column: Column) -> pa.Array | None:
    """A column as one Arrow array, or None where Arrow cannot hold it as one type (mixed values, integers past 64
    bits)."""
    if isinstance(column, pl.Series):
        column = column.to_arrow()
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    if isinstance(column, pa.Array):
        return column
    try:
        return pa.array(list(column))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None


def _json_value(array: pa.Array | None) -> tuple[str, tuple[np.ndarray, memoryview | bytes]] | None:
    """Each value's canonical JSON as text, less the quotes around it, as a part of _sha256.pieces (_text_span): ("",
    the decimal text) of integers, ('"', the text) of text that needs no escaping; None for any other column."""
    if array is None or array.null_count:
        return None
    if pa.types.is_integer(array.type):
        return "", _text_span(pc.cast(array, pa.large_string()))
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        offsets, data = _text_span(array)
        if not _plain(np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]]):
            return None
        return '"', (offsets, data)
    return None


def _python_values(column: Column) -> list:
    """A column's values as Python objects."""
    return column.to_pylist() if isinstance(column, (pa.Array, pa.ChunkedArray)) else column.to_list() \
        if isinstance(column, pl.Series) else list(column)


def _text_span(texts: pa.Array) -> tuple[np.ndarray, memoryview | bytes]:
    """A string column as a part of _sha256.pieces: its offsets (string_buffers) as int64 numpy, and its data."""
    ends, data = string_buffers(texts)
    return np.frombuffer(ends, dtype=np.int64), data


def _pieces_on_threads(prefix: bytes, count: int, parts: Sequence[tuple[np.ndarray, memoryview | bytes]],
                       head: np.ndarray | None = None) -> bytes:
    """_sha256.pieces of `count` rows (each part an int64 offsets array and its data; `head` a (count, width) array),
    in ranges on a thread per core past THREADED_ROWS rows a thread (C hashes with the GIL released)."""

    def rows_digests(start: int, end: int) -> bytes:
        return _sha256.pieces(prefix, end - start, b"" if head is None else head[start:end].data,
                              [(offsets[start:end + 1].data, data) for offsets, data in parts])

    return b"".join(on_threads(rows_digests, count, THREADED_ROWS))


DIGEST = np.dtype((np.void, 32))
"""A 32-byte digest as one numpy element: gathering them copies 32 bytes a row, about three times faster than the rows
of an (n, 32) uint8 array (12 million leaves an epoch at 10,000 hosts x 1,000,000 tasks)."""


def digests_in_order(parts: Sequence[bytes], order: np.ndarray) -> np.ndarray:
    """32-byte digests given end to end (in parts), taken in `order`: an array of DIGEST."""
    return np.take(np.frombuffer(b"".join(parts), dtype=DIGEST), order)


def split_digests(digests: bytes) -> list[bytes]:
    """32-byte digests given end to end, one bytes object each."""
    return [digests[start:start + 32] for start in range(0, len(digests), 32)]


def string_buffers(texts: pa.Array) -> tuple[memoryview, memoryview | bytes]:
    """A string column's offsets (its own slice, as int64) and data buffer, as _sha256.pieces reads them; text of
    another layout (a string view) is cast to one first."""
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        texts = texts.cast(pa.large_string())
    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    _, offsets, data = texts.buffers()
    ends = np.frombuffer(offsets, dtype=width)[texts.offset:texts.offset + len(texts) + 1].astype(np.int64)
    return ends.data, memoryview(data) if data is not None else b""


NonFiniteFloat = _canonical.NonFiniteFloat
"""What json_digests and json_texts raise for a NaN or an infinity (a ValueError naming its row and key)."""

THREADED_ROWS = 50_000
"""Rows per thread from which hash_each, json_digests and columns_digests hash on more than one core."""


def json_digests(prefix: bytes, rows: pa.Table | pa.RecordBatch, keys: Sequence[str]) -> bytes:
    """SHA-256(prefix || canonical_bytes of each row as an object of `keys`, key i the value of column i) end to end,
    written and hashed in C from the columns' buffers (_canonical.json_digests: Ryu's shortest floats as repr, JSON's
    escapes as Python's), a table's chunks as they lie, on a thread per core past THREADED_ROWS rows a thread. Columns
    of bool, integers, float64, text and lists of them; a NaN or an infinity is refused (NonFiniteFloat, a ValueError),
    as canonical_bytes refuses it."""
    names, firsts, levels = _json_columns(rows, keys)

    def rows_digests(start: int, end: int) -> bytes:
        """The digests of rows [start, end) of the whole, batch by batch."""
        digests = []
        for index in range(bisect.bisect_right(firsts, start) - 1, len(levels)):
            begin = firsts[index]
            if begin >= end:
                break
            digests.append(_canonical.json_digests(prefix, max(start, begin) - begin, min(end, firsts[index + 1]) - begin,
                                                   max(start, begin), names, levels[index]))
        return b"".join(digests)

    return b"".join(on_threads(rows_digests, firsts[-1], THREADED_ROWS))


def json_texts(prefix: bytes, rows: pa.Table | pa.RecordBatch, keys: Sequence[str]) -> list[bytes]:
    """prefix || canonical_bytes of each row as an object of `keys`, written in C as json_digests writes them (a signed
    message a row, without a dict or a list built for its body)."""
    names, firsts, levels = _json_columns(rows, keys)
    return [text for first, end, columns in zip(firsts, firsts[1:], levels) for text in
            _canonical.json_texts(prefix, 0, end - first, first, names, columns)]


def _json_columns(rows: pa.Table | pa.RecordBatch, keys: Sequence[str]) -> tuple[tuple[bytes, ...], list[int], list[list[tuple]]]:
    """The keys' JSON in canonical (sorted) order, each non-empty batch's first row and then the row count, and each
    batch's columns in that order as _canonical reads them. The keys must be distinct text, as an object's are."""
    if len(keys) != rows.num_columns:
        raise ValueError(f"{len(keys)} keys for {rows.num_columns} columns")
    if not all(isinstance(key, str) for key in keys) or len(set(keys)) != len(keys):
        raise ValueError(f"an object's keys are distinct text, not {list(keys)!r}")
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    batches = [batch for batch in (rows.to_batches() if isinstance(rows, pa.Table) else [rows]) if batch.num_rows]
    return (tuple(canonical_row_bytes(keys[i]) for i in order), list(accumulate((batch.num_rows for batch in batches), initial=0)),
            [[_json_level(batch.column(i)) for i in order] for batch in batches])


_JSON_KINDS = {pa.bool_(): 0, pa.int32(): 1, pa.int64(): 2, pa.float64(): 3, pa.string(): 4, pa.large_string(): 5}
"""_canonical's kind of each Arrow type it writes whole (lists are 6 with int32 offsets, 7 with int64)."""


def _json_level(array: pa.Array) -> tuple:
    """An Arrow column as _canonical.json_digests reads it: (kind, offset, length, validity, offsets, data, items) levels
    down to its values (text views and small integers are cast to a type it reads)."""
    kind = _JSON_KINDS.get(array.type)
    if kind is None and (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        kind = 6 if pa.types.is_list(array.type) else 7
    elif kind is None:
        wider = (pa.int64() if pa.types.is_integer(array.type) else pa.large_string()
                 if pa.types.is_string_view(array.type) else None)
        if wider is None:
            raise TypeError(f"no canonical JSON for a column of {array.type}")
        return _json_level(array.cast(wider))
    buffers = array.buffers()
    validity = buffers[0] if array.null_count else None
    if kind >= 6:
        return kind, array.offset, len(array), validity, buffers[1], None, _json_level(array.values)
    if kind >= 4:
        return kind, array.offset, len(array), validity, buffers[1], buffers[2], None
    return kind, array.offset, len(array), validity, None, buffers[1], None

_ITEM_FORMATS = {"int32": "<i4", "int64": "<i8", "float64": "<f8", "bool": "u1"}
"""The numpy type of a fixed-size item in the columns encoding (little-endian, as columns_body packs it)."""


def columns_digests(prefix: bytes, rows: pa.Table | pa.RecordBatch, fields: Sequence[tuple[str, str]]) -> bytes:
    """SHA-256(prefix || columns_body of each row) end to end, over Arrow columns named and typed by `fields`
    (record_roots.RECORD_FIELDS): the fixed-width heads are packed in numpy, and each text and list field's contents
    are hashed where the column's buffers hold them (_sha256.pieces: no copy of the rows, no Python object a row). A
    table is hashed a record batch at a time, as its chunks lie."""
    if isinstance(rows, pa.Table):
        return b"".join(columns_digests(prefix, batch, fields) for batch in rows.to_batches())
    count = rows.num_rows
    if not count:
        return b""
    heads: list[np.ndarray] = []  # (count, width) bytes of each field's head part, in order
    parts: list[tuple[np.ndarray, np.ndarray | memoryview | bytes]] = []  # (offsets, data) of each text or list field, in order
    for name, field_type in fields:
        column = rows.column(name)
        if column.null_count:
            raise ValueError(f"record field {name!r} is null in {column.null_count} row(s): a signed record holds no nulls")
        item, depth = field_type.rstrip("[]"), field_type.count("[]")
        if depth == 0 and item != "str":
            heads.append(_item_bytes(column, item).view(np.uint8).reshape(count, -1))
            continue
        if depth == 0:
            ends, data = string_buffers(column)
            positions = np.frombuffer(ends, dtype=np.int64)
            heads.append(_counts(positions))
            parts.append((positions, data))
            continue
        starts = _offsets(column)
        heads.append(_counts(starts))
        inner = column.values
        if depth == 2:
            inner_starts = _offsets(inner)
            parts.append((starts * 4, _counts(inner_starts)))
            starts, inner = inner_starts[starts], inner.values
        if inner.null_count:
            raise ValueError(f"record field {name!r} holds a null item: a signed record holds no nulls")
        if item == "str":
            ends, data = string_buffers(inner)
            positions = np.frombuffer(ends, dtype=np.int64)
            parts += [(starts * 4, _counts(positions)), (positions[starts], data)]
        else:
            items = _item_bytes(inner, item)
            parts.append((starts * items.itemsize, items))
    head = np.ascontiguousarray(np.concatenate(heads, axis=1))
    spans = [(np.ascontiguousarray(offsets, dtype=np.int64), np.ascontiguousarray(data).data if isinstance(data, np.ndarray) else data)
             for offsets, data in parts]
    return _pieces_on_threads(prefix, count, spans, head)


def _offsets(lists: pa.Array) -> np.ndarray:
    """A list column's offsets (its own slice of them, into its values) as int64."""
    return lists.offsets.to_numpy().astype(np.int64, copy=False)


def _item_bytes(values: pa.Array, item: str) -> np.ndarray:
    """A column of fixed-size items as numpy values of the encoding's type: a view where the column holds that type
    (as the chain's tables do), else converted, and refused where a value does not fit or is not a bool for a bool."""
    if (item == "bool") != pa.types.is_boolean(values.type):
        raise ValueError(f"a column of {values.type} cannot hold {item} items")
    array = values.to_numpy(zero_copy_only=False)
    converted = array.astype(_ITEM_FORMATS[item], copy=False)
    if converted is not array and converted.dtype.kind in "iu" and not np.array_equal(converted, array):
        raise ValueError(f"a column of {array.dtype} holds a value that is no {item}")
    return converted


def _counts(ends: np.ndarray) -> np.ndarray:
    """The u32 length of each span between consecutive offsets, as (spans, 4) little-endian bytes."""
    return np.diff(ends).astype("<u4").view(np.uint8).reshape(-1, 4)
