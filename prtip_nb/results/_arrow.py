"""Arrow-only ports logic shared by the builder, ScanResult and the dataset reader:
compact columns, host ordering, dedup, service merge.

Everything here works on whole columns (pyarrow.compute), never on Python objects per row,
and imports no pandas: the scanning path goes through it.
"""

from __future__ import annotations

import ipaddress
import mmap
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


_ZERO: pa.Buffer | None = None
_ZERO_MMAP = 1 << 16  # from this size on, zeros come from an untouched read-only mapping


def zeros(n: int) -> pa.Buffer:
    """A zeroed buffer big enough for any column of ``n`` rows (8 B per row, at least 16 B).

    Large ones are slices of one private anonymous mapping that nothing ever writes: its
    pages stay unbacked (reads map the kernel's shared zero page), so all-null columns cost
    no resident memory at all instead of 8 B per row.
    """
    global _ZERO
    size = 8 * max(n, 2)
    if size < _ZERO_MMAP:
        # bytes, not pa.repeat(pa.scalar(0)): building a pa.scalar from Python imports pandas.
        return pa.py_buffer(bytes(size))
    if _ZERO is None or _ZERO.size < size:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        _ZERO = pa.py_buffer(mmap.mmap(-1, max(size, 1 << 24), flags=flags, prot=mmap.PROT_READ))
    return _ZERO.slice(0, size)


def null_array(typ: pa.DataType, n: int, zero: pa.Buffer) -> pa.Array:
    """An all-null array of ``n`` rows that allocates nothing beyond the shared ``zero``."""
    if pa.types.is_string(typ):
        return pa.Array.from_buffers(typ, n, [zero, zero, pa.py_buffer(b"")], null_count=n)
    if pa.types.is_list(typ):
        child = pa.nulls(0, typ.value_type)
        return pa.Array.from_buffers(typ, n, [zero, zero], null_count=n, children=[child])
    if pa.types.is_primitive(typ):
        return pa.Array.from_buffers(typ, n, [zero, zero], null_count=n)
    if pa.types.is_dictionary(typ) and pa.types.is_string(typ.value_type):
        indices = pa.Array.from_buffers(typ.index_type, n, [zero, zero], null_count=n)
        return pa.DictionaryArray.from_arrays(indices, cv.plain_strings([]))
    return pa.nulls(n, typ)


def constant_dict(value: str, n: int, zero: pa.Buffer) -> pa.DictionaryArray:
    """``n`` copies of ``value`` as dictionary<int32, string>, indices from ``zero``."""
    indices = pa.Array.from_buffers(pa.int32(), n, [None, zero])
    return pa.DictionaryArray.from_arrays(indices, cv.plain_strings([value]))


def group_by_state(table: pa.Table) -> tuple[pa.Table, list[int]]:
    """``table`` with its rows grouped by state (stable: appended order within a state),
    and the offsets where each state after the first starts: one Parquet row group a
    state, whose min = max statistics let a reader skip every group of other states."""
    import numpy as np

    state = table["state"].combine_chunks()
    codes = cv.values(state.indices).astype(np.int32)
    if len(codes) == 0 or (codes == codes[0]).all():
        return table, []
    order = np.argsort(codes, kind="stable")
    ranked = codes[order]
    starts = (np.flatnonzero(ranked[1:] != ranked[:-1]) + 1).tolist()
    return take_compact(table, _int_indices(order)), starts


def concat_compact(batches: Sequence[pa.RecordBatch]) -> pa.RecordBatch:
    """One batch of ``batches`` (one schema), keeping all-null columns and a one-value
    scan_id compact: ``pa.concat_batches`` would give each null string column its own
    offsets (4 B a row) and validity."""
    first = batches[0]
    n = sum(b.num_rows for b in batches)
    zero = zeros(n)
    cols = []
    for i, field in enumerate(first.schema):
        parts = [b.column(i) for b in batches]
        if all(p.null_count == len(p) for p in parts):
            cols.append(null_array(field.type, n, zero))
            continue
        if field.name == "scan_id":
            ids = {v for p in parts for v in pc.unique(p).to_pylist()}
            if len(ids) == 1:
                cols.append(constant_dict(ids.pop(), n, zero))
                continue
        cols.append(pa.concat_arrays(parts))
    return pa.RecordBatch.from_arrays(cols, schema=first.schema)


def take_compact(table: pa.Table, indices: pa.Array) -> pa.Table:
    """``table.take(indices)``, keeping all-null columns and a one-value scan_id compact."""
    zero = zeros(len(indices))
    cols = [_take_column(f, c, indices, zero) for f, c in zip(table.schema, table.columns,
                                                                strict=True)]
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
    return pc.index_in(hosts, value_set=hosts_in_order(hosts))


def hosts_in_order(hosts: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The distinct non-null hosts of ``hosts`` in IP numeric order (``host_rank``'s ranks)."""
    distinct = pc.unique(hosts)
    if isinstance(distinct, pa.DictionaryArray):
        distinct = distinct.dictionary_decode()
    return distinct.take(_ip_order(distinct))


# An IPv4 address as ipaddress accepts it: four decimal octets 0-255, no leading zeros.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4 = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"


def _ip_order(distinct: pa.Array) -> pa.Array:
    """Indices that sort ``distinct`` host texts as ``_ip_key`` does.

    IPv4 texts are parsed by Arrow kernels (a /15's 131K hosts: ~30 ms, no Python object
    each; through ``ipaddress`` ~0.6 s and ~30 MiB of objects at the end of a scan); the
    rest (IPv6, oddities) go through ``_ip_key``.
    """
    import numpy as np

    is_v4 = cv.values(pc.cast(pc.match_substring_regex(distinct, _V4), pa.uint8())) == 1
    v4_at, others_at = np.flatnonzero(is_v4), np.flatnonzero(~is_v4)
    order = []
    if len(v4_at):
        v4 = distinct.take(_int_indices(v4_at))
        quads = pc.list_flatten(pc.split_pattern(v4, "."))
        octets = cv.values(pc.cast(quads, pa.uint32()), fill=0).astype(np.uint64).reshape(-1, 4)
        value = (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3]
        order.append(v4_at[np.argsort(value, kind="stable")])
    if len(others_at):
        texts = distinct.take(_int_indices(others_at)).to_pylist()
        others_at = others_at[[t is not None for t in texts]]  # a null host has no rank
        texts = [t for t in texts if t is not None]
        ranked = sorted(range(len(texts)), key=lambda i: _ip_key(texts[i]))
        order.append(others_at[np.array(ranked, np.int64)])
    if not order:
        return _int_indices(np.zeros(0, np.int64))
    # IPv4 first (version 4 < 6), then IPv6, then non-addresses: _ip_key's order, since
    # every text matching _V4 has key (0, 4, ...) and sorts before any other.
    return _int_indices(np.concatenate(order))


def _int_indices(idx: Any) -> pa.Array:
    import numpy as np

    arr = np.ascontiguousarray(idx, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(arr), [None, pa.py_buffer(arr)])


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
        if chunk.dictionary.equals(values):  # already in order (the engines' batches are)
            chunks.append(chunk)
            continue
        mapping = pc.index_in(chunk.dictionary, value_set=values)
        chunks.append(pa.DictionaryArray.from_arrays(mapping.take(chunk.indices), values))
    return pa.chunked_array(chunks, type=col.type)


def set_column(table: pa.Table, name: str, col: Any) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), table.schema.field(name), col)


# --- ports --------------------------------------------------------------------------------


def normalize_ports(table: pa.Table | list[pa.RecordBatch]) -> pa.Table:
    """Conform, deduplicate and sort a ports table.

    One row per (scan_id, host, proto, port): an open/closed/unfiltered row beats a
    filtered or unanswered one, and among equals the first appended wins (the sort is stable).
    Rows come out by scan_id, host (IP order), proto, port; states in nmap's order.

    Given a list of schema.PORTS batches instead, the list is emptied and each input column
    is freed as soon as its sorted copy exists: the peak is one table and one column, not two
    tables (the builder hands its batches over this way at ``finish``).
    """
    if isinstance(table, list):
        batches = table
        table = pa.Table.from_batches(batches, schema=schema.PORTS)
        batches.clear()
    table = schema.conform(table, "ports")
    if table.num_rows == 0:
        return table
    order, hosts = _sorted_unique_rows(table)
    out_schema, cols = table.schema, table.columns
    del table  # from here on ``cols`` holds the only references (when the caller gave batches)
    n = len(order)
    zero = zeros(n)
    # HOST LAST: its text (13 B a row for an IPv4 address) is freed before any other column
    # is copied, and rebuilt at the end from the distinct hosts and each row's rank, which
    # the sort needed anyway (4 B a row; nothing at all for one host). Measured on a
    # 65,535-port scan, the copy of the text beside the rows was the finish's peak.
    at = out_schema.get_field_index("host")
    cols[at] = None
    for i, field in enumerate(out_schema):
        if i == at:
            continue
        col, cols[i] = cols[i], None
        cols[i] = _take_column(field, col, order, zero)
        del col
    distinct, rank = hosts
    del hosts
    cols[at] = repeat(distinct, n) if rank is None else distinct.take(rank.take(order))
    del rank
    out = pa.Table.from_arrays(cols, schema=out_schema)
    return set_column(out, "state", fix_dictionary(out["state"], schema.STATES))


#: Rows of the one block that a column of one value (one host's text) is sliced from.
REPEAT_BLOCK = 1 << 14


def repeat(value: pa.Array, n: int) -> pa.ChunkedArray:
    """``n`` copies of ``value[0]`` as slices of one block of at most REPEAT_BLOCK rows: a
    column of one value costs one block however many rows it has (a string column of one
    host's address costs 13 B a row otherwise)."""
    size = min(n, REPEAT_BLOCK)
    block = value.slice(0, 1).take(pa.Array.from_buffers(pa.int32(), size, [None, zeros(size)]))
    return pa.chunked_array([block.slice(0, min(size, n - at)) for at in range(0, n, size)],
                            type=value.type)


def _sorted_unique_rows(
    table: pa.Table,
) -> tuple[pa.Array, tuple[pa.Array, pa.ChunkedArray | pa.Array | None]]:
    """Row indices in (scan_id, host, proto, port) order, one per key, answered rows first;
    and (the distinct hosts in IP order, each row's index among them, or None when every
    row has the one host): what rebuilds the host column in that order.

    The keys and the silent flag are packed into one unsigned integer per row (uint32 when
    they fit, else uint64): one single-column sort, and duplicates are neighbours with
    equal ``key >> 1``. A key column of one value (one scan, one host, one proto) adds
    nothing to it. It costs 12-24 B per row, freed before the rows are copied, where a
    multi-column sort and a table of keys cost ~50.
    """
    ranks: list[tuple[pa.ChunkedArray | pa.Array | None, int]] = []
    host_key: tuple[pa.Array, pa.ChunkedArray | pa.Array | None] | None = None
    for name in ("scan_id", "host", "proto"):
        col = table[name]
        if name == "host":
            distinct = hosts_in_order(col)
            one = col.null_count == 0 and len(distinct) == 1
            rank = None if one else pc.index_in(col, value_set=distinct)
            host_key = (distinct, rank)
            if rank is not None:
                ranks.append((rank, len(distinct) + (col.null_count > 0)))
            continue
        distinct = pc.unique(col)
        if len(distinct) == 1 and (name == "scan_id" or col.null_count == 0):
            continue  # one scan (one proto): nothing to order by
        ranks.append((text_rank(col), len(distinct)))
    assert host_key is not None
    ranks.append((table["port"], 1 << 16))
    silent = pc.invert(pc.is_in(table["state"], value_set=RESPONSIVE_SET))
    ranks.append((silent, 2))
    span = 1
    for _, size in ranks:
        span *= size
    typ = pa.uint32() if span <= 1 << 32 else pa.uint64()
    assert span <= 1 << 64, "more than 2**47 hosts cannot be sorted"
    key: Any = None
    for rank, size in ranks:
        part = pc.cast(rank, typ)
        key = part if key is None else pc.add(pc.multiply(key, _uint(size, typ)), part)
    del ranks, silent, rank, part
    order = pc.sort_indices(key)  # stable: among equal keys the first appended comes first
    if len(order) < 1 << 32:
        order = pc.cast(order, pa.uint32())  # half the indices' memory, for the takes too
    ranked = key.take(order)
    del key
    group = pc.shift_right(ranked, _uint(1, typ))
    del ranked
    if isinstance(group, pa.ChunkedArray):
        group = group.combine_chunks()
    n = len(group)
    same = pc.equal(group.slice(1), group.slice(0, n - 1))
    del group
    if not pc.any(same).as_py():
        return order, host_key
    return pc.filter(order, pa.concat_arrays([TRUE, pc.invert(same)])), host_key


def _uint(value: int, typ: pa.DataType) -> pa.Scalar:
    return cv.numbers([value], typ)[0]


def _take_column(field: pa.Field, col: pa.ChunkedArray, order: pa.Array, zero: pa.Buffer) -> Any:
    """``col.take(order)``, keeping an all-null column, a one-value scan_id and a dictionary
    column whose indices are all 0 (one proto, as the sink makes it) compact."""
    n = len(order)
    if col.null_count == len(col):
        return null_array(field.type, n, zero)
    if field.name == "scan_id":
        ids = pc.unique(col).to_pylist()
        if len(ids) == 1:
            return constant_dict(ids[0], n, zero)
    if pa.types.is_dictionary(field.type) and _zero_indices(col):
        indices = pa.Array.from_buffers(field.type.index_type, n, [None, zero])
        return pa.DictionaryArray.from_arrays(indices, col.chunk(0).dictionary)
    if col.num_chunks > 1:
        # One chunk at a time would need a per-chunk split of ``order``; combining first
        # costs one column more, briefly, and keeps the take a single kernel call.
        col = col.combine_chunks()
    return col.take(order)


def _zero_indices(col: pa.ChunkedArray) -> bool:
    """Every row of dictionary column ``col`` is index 0 of one shared dictionary."""
    if col.null_count or col.num_chunks == 0:
        return False
    first = col.chunk(0).dictionary
    for chunk in col.chunks:
        if not (chunk.dictionary.equals(first) and pc.max(chunk.indices).as_py() == 0
                and pc.min(chunk.indices).as_py() == 0):
            return False
    return True


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
