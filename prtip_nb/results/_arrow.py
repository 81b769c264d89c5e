"""Arrow-only ports logic shared by the builder, ScanResult and the dataset reader:
compact columns, host ordering, dedup, service merge.

Everything here works on whole columns (pyarrow.compute), never on Python objects per row,
and imports no pandas: the scanning path goes through it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.results import _convert as cv
from prtip_nb.results import schema

#: States that prove something answered. They win dedup and make a host "up".
RESPONSIVE = ("open", "closed", "unfiltered")

# Constant arrays and scalars, built once and without pa.array (see _convert: no pandas).
RESPONSIVE_SET = cv.plain_strings(RESPONSIVE)
OPEN = cv.plain_strings(["open"])
TRUE = cv.bools([True])
SEP = cv.scalar_str("|")

#: The columns that service/TLS detection fills in, keyed by (host, proto, port).
SERVICE_COLUMNS = tuple(schema.PORTS.names[schema.PORTS.get_field_index("service") :])
SERVICES = pa.schema(
    [pa.field("host", pa.string()), pa.field("proto", pa.string()), pa.field("port", pa.uint16())]
    + [schema.PORTS.field(name) for name in SERVICE_COLUMNS]
)


# --- compact columns ----------------------------------------------------------------------
# A ports table has 11 service columns that are null until detection runs, and a scan_id that
# is one value. Built naively they cost ~40 B per row; here they all share one zeroed buffer
# (all-null validity, zero offsets, zero indices), which is what keeps a row under 60 B.


def zeros(n: int) -> pa.Buffer:
    """A zeroed buffer big enough for any column of ``n`` rows (8 B per row, at least 16 B)."""
    # bytes, not pa.repeat(pa.scalar(0)): building a pa.scalar from Python imports pandas.
    return pa.py_buffer(bytes(8 * max(n, 2)))


def null_array(typ: pa.DataType, n: int, zero: pa.Buffer) -> pa.Array:
    """An all-null array of ``n`` rows that allocates nothing beyond the shared ``zero``."""
    if pa.types.is_string(typ):
        return pa.Array.from_buffers(typ, n, [zero, zero, pa.py_buffer(b"")], null_count=n)
    if pa.types.is_list(typ):
        child = pa.nulls(0, typ.value_type)
        return pa.Array.from_buffers(typ, n, [zero, zero], null_count=n, children=[child])
    if pa.types.is_primitive(typ):
        return pa.Array.from_buffers(typ, n, [zero, zero], null_count=n)
    return pa.nulls(n, typ)


def constant_dict(value: str, n: int, zero: pa.Buffer) -> pa.DictionaryArray:
    """``n`` copies of ``value`` as dictionary<int32, string>, indices from ``zero``."""
    indices = pa.Array.from_buffers(pa.int32(), n, [None, zero])
    return pa.DictionaryArray.from_arrays(indices, cv.plain_strings([value]))


def take_compact(table: pa.Table, indices: pa.Array) -> pa.Table:
    """``table.take(indices)``, keeping all-null columns and a one-value scan_id compact."""
    n = len(indices)
    zero = zeros(n)
    cols = []
    for field, col in zip(table.schema, table.columns, strict=True):
        if col.null_count == len(col):
            cols.append(null_array(field.type, n, zero))
            continue
        if field.name == "scan_id":
            ids = pc.unique(col).to_pylist()
            if len(ids) == 1:
                cols.append(constant_dict(ids[0], n, zero))
                continue
        cols.append(col.take(indices))
    return pa.Table.from_arrays(cols, schema=table.schema)


# --- ordering -----------------------------------------------------------------------------


def _ip_key(text: str) -> tuple[int, int, int, str]:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return (1, 0, 0, text)  # not an address (should not happen): after all addresses
    return (0, ip.version, int(ip), text)


def host_rank(hosts: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Per row, the rank of its host in IP numeric order (IPv4 before IPv6).

    Only the distinct hosts go through Python (``ipaddress``); rows are mapped back with
    ``index_in``, so a million rows over a few hosts cost a few milliseconds.
    """
    distinct = sorted(pc.unique(hosts).to_pylist(), key=_ip_key)
    return pc.index_in(hosts, value_set=cv.plain_strings(distinct))


def text_rank(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Per row, the rank of its (dictionary or string) value in text order."""
    distinct = sorted(v for v in pc.unique(col).to_pylist() if v is not None)
    return pc.index_in(col, value_set=cv.plain_strings(distinct))


def fix_dictionary(col: pa.ChunkedArray, vocab: Sequence[str]) -> pa.ChunkedArray:
    """Re-encode a dictionary column so its dictionary is ``vocab`` (then any extra words).

    A fixed dictionary order (nmap's, for states) makes categories read in that order and
    lets every chunk share one dictionary.
    """
    seen: set[str] = set()
    for chunk in col.chunks:
        seen.update(v for v in chunk.dictionary.to_pylist() if v is not None)
    words = list(vocab) + sorted(seen - set(vocab))
    values = cv.plain_strings(words)
    chunks = []
    for chunk in col.chunks:
        mapping = pc.index_in(chunk.dictionary, value_set=values)
        chunks.append(pa.DictionaryArray.from_arrays(mapping.take(chunk.indices), values))
    return pa.chunked_array(chunks, type=col.type)


def set_column(table: pa.Table, name: str, col: Any) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), table.schema.field(name), col)


# --- ports --------------------------------------------------------------------------------


def normalize_ports(table: pa.Table) -> pa.Table:
    """Conform, deduplicate and sort a ports table.

    One row per (scan_id, host, proto, port): an open/closed/unfiltered row beats a
    filtered or unanswered one, and among equals the first appended wins (the sort is stable).
    Rows come out by scan_id, host (IP order), proto, port; states in nmap's order.
    """
    table = schema.conform(table, "ports")
    if table.num_rows == 0:
        return table
    keys = pa.table(
        {
            "scan": text_rank(table["scan_id"]),
            "host": host_rank(table["host"]),
            "proto": text_rank(table["proto"]),
            "port": table["port"],
            "silent": pc.invert(pc.is_in(table["state"], value_set=RESPONSIVE_SET)),
        }
    )
    order = pc.sort_indices(keys, sort_keys=[(name, "ascending") for name in keys.column_names])
    ranked = keys.take(order)
    n = table.num_rows
    # After the sort, a duplicate is a row whose key equals the previous row's key.
    same = None
    for name in ("scan", "host", "proto", "port"):
        col = ranked[name]
        eq = pc.equal(col.slice(1), col.slice(0, n - 1))
        same = eq if same is None else pc.and_(same, eq)
    assert same is not None
    keep = pa.concat_arrays([TRUE, pc.invert(same).combine_chunks()])
    out = take_compact(table, pc.filter(order, keep))
    return set_column(out, "state", fix_dictionary(out["state"], schema.STATES))


def merge_services(ports: pa.Table, services: pa.Table) -> pa.Table:
    """Fill the service/TLS columns of ``ports`` from ``services`` (schema SERVICES).

    Rows are matched on host/proto/port; a service row with no ports row is dropped.
    """
    if services.num_rows == 0 or ports.num_rows == 0:
        return ports

    def key(t: pa.Table) -> Any:
        proto = pc.cast(t["proto"], pa.string())
        port = pc.cast(t["port"], pa.string())
        return pc.binary_join_element_wise(t["host"], proto, port, SEP)

    pos = pc.index_in(key(ports), value_set=key(services).combine_chunks())
    for name in SERVICE_COLUMNS:
        if services[name].null_count < services.num_rows:
            ports = set_column(ports, name, services[name].take(pos))
    return ports
