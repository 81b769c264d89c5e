"""Column lists -> ports record batches, in chunks: the shared back end of the importers.

An importer appends Python values to plain lists (the cheapest thing a parser callback can
do) and hands them over every ``CHUNK`` rows; only one chunk of Python objects is alive at a
time, so a file of any size costs its Arrow columns (~60 B a row) plus one chunk.
No pandas here: an import driven from the CLI does not need it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.results import _arrow, schema
from prtip_nb.results import _convert as cv

CHUNK = 65536

# May arrive as text (XML attributes): Arrow casts them in C.
_NUMERIC_TEXT = ("port", "ttl", "conf")


def ports_batch(scan_id: str, columns: Mapping[str, Sequence[Any]], n: int) -> pa.RecordBatch:
    """A schema.PORTS batch of ``n`` rows from ``columns`` (absent columns are null).

    ``port`` and ``ttl`` may be given as text; ``family`` may be omitted (taken from the
    host: an address with a colon is IPv6).
    """
    zero = _arrow.zeros(n)
    arrays: dict[str, pa.Array] = {"scan_id": _arrow.constant_dict(scan_id, n, zero)}
    for name, values in columns.items():
        field = schema.PORTS.field(name)
        if isinstance(values, pa.Array):  # built in Arrow already (the fast path's)
            arrays[name] = values if values.type == field.type else pc.cast(values, field.type)
        elif values[0] is None and values.count(None) == n:  # e.g. no hostname at all
            arrays[name] = _arrow.null_array(field.type, n, zero)
        elif name in _NUMERIC_TEXT and isinstance(next(v for v in values if v is not None), str):
            arrays[name] = pc.cast(cv.strings(values), field.type)
        else:
            arrays[name] = cv.column(values, field.type)
    if "family" not in arrays:
        arrays["family"] = families(arrays["host"])
    cols = [
        arrays[f.name] if f.name in arrays else _arrow.null_array(f.type, n, zero)
        for f in schema.PORTS
    ]
    return pa.RecordBatch.from_arrays(cols, schema=schema.PORTS)


def families(hosts: pa.Array) -> pa.Array:
    """uint8 4 or 6 per address text: IPv6 text, and only IPv6 text, has a colon."""
    six = pc.cast(pc.match_substring(hosts, ":"), pa.uint8())
    return pc.add(pc.multiply(six, cv.numbers([2], pa.uint8())[0]), cv.numbers([4], pa.uint8())[0])


def ports_table(batches: list[pa.RecordBatch]) -> pa.Table:
    """The batches as one normalized ports table (deduplicated, sorted, nmap state order)."""
    return _arrow.normalize_ports(pa.Table.from_batches(batches, schema=schema.PORTS))


def with_scan_id(table: pa.Table, scan_id: str) -> pa.Table:
    """``table`` with every row's scan_id set to ``scan_id`` (a compact constant column)."""
    n = table.num_rows
    return _arrow.set_column(table, "scan_id", _arrow.constant_dict(scan_id, n, _arrow.zeros(n)))
