"""Python values -> Arrow arrays, without ``pa.array``.

Why this exists: in pyarrow 26, ``pa.array``, ``pa.scalar``, ``Table.from_pylist``, a
compute call given a Python list or str, ``Table.group_by`` and ``Schema.empty_table`` all
end in pyarrow's pandas shim, which imports pandas (0.34 s, 116 MB here) the first time it
is asked whether a value is "array-like". The scanning path must not pay that, so this
module builds arrays from buffers: ``array.array`` converts numbers in C, strings go through
one ``str.join`` and Arrow's own split kernel. Its output is ordinary Arrow; only the route
avoids the shim. Speed is close to ``pa.array`` (~40 ns per value and column).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# array.array type codes by Arrow type name; sizes are checked in _code (they are C types).
_CODES = {
    "uint8": "B",
    "uint16": "H",
    "uint32": "I",
    "uint64": "Q",
    "int8": "b",
    "int16": "h",
    "int32": "i",
    "int64": "q",
    "float": "f",
    "double": "d",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_NAN = float("nan")
_NO_INT = -(2**63)  # stands for None in an int64 buffer: no µs time or port count is that


def _code(typ: pa.DataType) -> str:
    code = _CODES["int64" if pa.types.is_timestamp(typ) else str(typ)]
    assert array(code).itemsize * 8 == typ.bit_width, typ
    return code


def _from(typ: pa.DataType, data: array[Any]) -> pa.Array:
    return pa.Array.from_buffers(typ, len(data), [None, pa.py_buffer(data)])


def _with_validity(typ: pa.DataType, data: pa.Array, valid: pa.Array) -> pa.Array:
    """``data``'s values, null where ``valid`` (a bool array without nulls) is false."""
    nulls = len(valid) - (pc.sum(valid).as_py() or 0)
    if nulls == 0:
        return data
    buffers = [valid.buffers()[1], data.buffers()[1]]
    return pa.Array.from_buffers(typ, len(valid), buffers, null_count=nulls)


def _validity(values: Sequence[Any]) -> tuple[pa.Buffer | None, int]:
    """The validity bitmap of ``values`` (None = null) and the null count."""
    nulls = values.count(None)  # C speed for list and tuple
    if nulls == 0:
        return None, 0
    flags = _from(pa.uint8(), array("B", [v is not None for v in values]))
    return pc.cast(flags, pa.bool_()).buffers()[1], nulls


def numbers(values: Sequence[Any], typ: pa.DataType) -> pa.Array:
    """Integers, floats or timestamps (int µs since the epoch, or aware datetimes).

    None is null, and so is NaN in a float column (an RTT or a rate cannot be NaN).
    """
    if pa.types.is_timestamp(typ) and any(isinstance(v, datetime) for v in values):
        values = [_micros(v) for v in values]  # a column may mix None, datetimes and ints
    code = _code(typ)
    if pa.types.is_floating(typ):
        # NaN stands for None (one Python pass), and a NaN given is null too.
        try:
            data = _from(typ, array(code, values))
        except TypeError:
            data = _from(typ, array(code, [_NAN if v is None else v for v in values]))
        return _with_validity(typ, data, pc.invert(pc.is_nan(data)))
    try:  # the common case, no None: one C-level conversion
        return _from(typ, array(code, values))
    except TypeError:
        if None not in values:
            raise
    if typ == pa.uint64():  # no spare value: build the bitmap directly
        validity, nulls = _validity(values)
        data = _from(typ, array(code, [0 if v is None else v for v in values]))
        return pa.Array.from_buffers(typ, len(values), [validity, data.buffers()[1]], nulls)
    # int64 holds every value of the narrower types, and _NO_INT, which none of them uses.
    wide = _from(pa.int64(), array("q", [_NO_INT if v is None else v for v in values]))
    valid = pc.not_equal(wide, _from(pa.int64(), array("q", [_NO_INT]))[0])
    if typ.bit_width < 64:  # a safe cast: a value out of range (a TTL of 300) raises
        wide = pc.cast(pc.if_else(valid, wide, _from(pa.int64(), array("q", [0]))[0]), typ)
    return _with_validity(typ, wide, valid)


def _micros(v: Any) -> Any:
    return (v - _EPOCH) // _US if isinstance(v, datetime) else v


def bools(values: Sequence[bool | None]) -> pa.Array:
    validity, nulls = _validity(values)
    flags = _from(pa.uint8(), array("B", [bool(v) for v in values]))
    data = pc.cast(flags, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(pa.bool_(), len(values), [validity, data], null_count=nulls)


def plain_strings(values: Sequence[str | None]) -> pa.Array:
    """A string array built value by value (for short lists, or values with None/newlines)."""
    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = array("i", accumulate(map(len, encoded), initial=0))
    validity, nulls = _validity(values)
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers, null_count=nulls)


def strings(values: Sequence[str | None]) -> pa.Array:
    """A string array: one ``"\\n".join`` in C, then Arrow splits it (4x faster than a loop)."""
    if len(values) < 64:
        return plain_strings(values)
    try:
        joined = "\n".join(values)  # type: ignore[arg-type]  # TypeError tells of a None
    except TypeError:
        return plain_strings(values)
    if joined.count("\n") != len(values) - 1:  # a value holds a newline: split would break it
        return plain_strings(values)
    data = joined.encode()
    one = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(array("i", [0, len(data)])), pa.py_buffer(data)]
    )
    return pc.split_pattern(one, "\n").flatten()


def dict_strings(values: Sequence[str | None]) -> pa.Array:
    """dictionary<int32, string>, encoded by Arrow."""
    return pc.dictionary_encode(strings(values))


def string_lists(values: Sequence[Sequence[str] | None]) -> pa.Array:
    flat = [s for v in values if v is not None for s in v]
    offsets = array("i", accumulate((0 if v is None else len(v) for v in values), initial=0))
    validity, nulls = _validity(values)
    buffers = [validity, pa.py_buffer(offsets)]
    typ = pa.list_(pa.string())
    child = plain_strings(flat)
    return pa.Array.from_buffers(typ, len(values), buffers, null_count=nulls, children=[child])


def lists(values: Sequence[Sequence[Any] | None], typ: pa.ListType) -> pa.Array:
    """A list array of any element type of the schema (structs included)."""
    if pa.types.is_string(typ.value_type):
        return string_lists(values)
    flat = [s for v in values if v is not None for s in v]
    offsets = array("i", accumulate((0 if v is None else len(v) for v in values), initial=0))
    validity, nulls = _validity(values)
    child = column(flat, typ.value_type)
    return pa.Array.from_buffers(typ, len(values), [validity, pa.py_buffer(offsets)],
                                 null_count=nulls, children=[child])  # fmt: skip


def structs(values: Sequence[Mapping[str, Any] | None], typ: pa.StructType) -> pa.Array:
    """A struct array from dicts (a missing key is null)."""
    children = [
        column([None if v is None else v.get(f.name) for v in values], f.type) for f in typ
    ]
    validity, nulls = _validity(values)
    return pa.Array.from_buffers(typ, len(values), [validity], null_count=nulls,
                                 children=children)  # fmt: skip


def column(values: Sequence[Any], typ: pa.DataType) -> pa.Array:
    """``values`` as an array of ``typ`` (the types of the results schema)."""
    if pa.types.is_dictionary(typ):
        return dict_strings(values)
    if pa.types.is_string(typ):
        return strings(values)
    if pa.types.is_boolean(typ):
        return bools(values)
    if pa.types.is_list(typ):
        return lists(values, typ)
    if pa.types.is_struct(typ):
        return structs(values, typ)
    return numbers(values, typ)


def table(columns: Mapping[str, Sequence[Any]], schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` from Python columns (missing ones are null)."""
    n = len(next(iter(columns.values()))) if columns else 0
    arrays = [
        column(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def scalar_str(value: str) -> pa.Scalar:
    """A string scalar (for compute options such as a join separator)."""
    return plain_strings([value])[0]


_NP_TYPES = {"int8": "i1", "int16": "i2", "int32": "i4", "int64": "i8", "uint8": "u1",
             "uint16": "u2", "uint32": "u4", "uint64": "u8", "float": "f4", "double": "f8"}


def values(arr: pa.Array | pa.ChunkedArray, fill: int | float = 0) -> Any:
    """A fixed-width array's values as a numpy array, nulls as ``fill``.

    ``Array.to_numpy``, ``np.asarray(arr)`` and ``fill_null`` with a Python value all pass
    through pyarrow's pandas shim (see above); this reads the buffers instead."""
    import numpy as np

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    dtype = np.dtype(_NP_TYPES[str(arr.type)])
    validity, data = arr.buffers()[:2]
    out = np.frombuffer(data, dtype, len(arr), arr.offset * dtype.itemsize).copy() \
        if data is not None else np.zeros(len(arr), dtype)
    if validity is not None and arr.null_count:
        bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")
        out[bits[arr.offset: arr.offset + len(arr)] == 0] = fill
    return out
