"""The Arrow schema of scan results, version 1. This module is its only owner.

Four tables make a scan: ``ports``, ``hosts``, ``telemetry`` and ``events``. In a Parquet
dataset each lives under ``<root>/scan_id=<id>/<table>/part-*.parquet``; ``scan_id`` is a
hive partition key there, so the part files do not repeat it (pyarrow.dataset and DuckDB
both refuse a column that is both in the file and in the path with other types).
In memory, tables carry ``scan_id`` as their first column.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

#: nmap's words, in the order a DataFrame should sort them.
STATES = ("open", "closed", "filtered", "unfiltered", "open|filtered", "closed|filtered")
HOST_STATES = ("up", "down", "unknown")

_DICT = pa.dictionary(pa.int32(), pa.string())
_TS = pa.timestamp("us", tz="UTC")

SCAN_ID = pa.field("scan_id", _DICT, nullable=False)
#: Which shard k (of a scan split k/n over processes or a Dask cluster) wrote a telemetry or
#: event row; null for an unsharded scan.
SHARD = pa.field("shard", pa.uint32())

PORTS = pa.schema(
    [
        SCAN_ID,
        pa.field("host", pa.string(), nullable=False),
        pa.field("hostname", pa.string()),
        pa.field("family", pa.uint8(), nullable=False),
        pa.field("proto", _DICT, nullable=False),
        pa.field("port", pa.uint16(), nullable=False),
        pa.field("state", _DICT, nullable=False),
        pa.field("reason", _DICT, nullable=False),
        pa.field("ttl", pa.uint8()),
        pa.field("rtt_ms", pa.float32()),
        pa.field("first_seen", _TS),
        pa.field("service", pa.string()),
        pa.field("product", pa.string()),
        pa.field("version", pa.string()),
        pa.field("extrainfo", pa.string()),
        pa.field("banner", pa.string()),
        pa.field("tls_subject", pa.string()),
        pa.field("tls_issuer", pa.string()),
        pa.field("tls_san", pa.list_(pa.string())),
        pa.field("tls_not_after", _TS),
        pa.field("tls_self_signed", pa.bool_()),
        pa.field("tls_version", pa.string()),
    ]
)

HOSTS = pa.schema(
    [
        SCAN_ID,
        pa.field("host", pa.string(), nullable=False),
        pa.field("hostname", pa.string()),
        pa.field("family", pa.uint8(), nullable=False),
        pa.field("state", _DICT, nullable=False),
        pa.field("reason", _DICT, nullable=False),
        pa.field("rtt_ms", pa.float32()),
        pa.field("open", pa.uint32(), nullable=False),
        pa.field("closed", pa.uint32(), nullable=False),
        pa.field("filtered", pa.uint32(), nullable=False),
        pa.field("other", pa.uint32(), nullable=False),
    ]
)

TELEMETRY = pa.schema(
    [
        SCAN_ID,
        pa.field("t", pa.float64(), nullable=False),  # seconds since the scan started
        pa.field("sent", pa.uint64(), nullable=False),
        pa.field("received", pa.uint64(), nullable=False),
        pa.field("open", pa.uint64(), nullable=False),
        pa.field("retries", pa.uint64(), nullable=False),
        pa.field("pps", pa.float64(), nullable=False),  # probes sent per second since last row
        pa.field("pps_received", pa.float64()),  # replies per second since last row
        pa.field("rss_bytes", pa.uint64(), nullable=False),
        pa.field("cpu_percent", pa.float32(), nullable=False),  # 100 = one core busy
        pa.field("threads", pa.uint16()),
        # The send rate in force (probes/s; null: no limit) and why: growing, probing,
        # backoff, floor, ceiling (adaptive), pinned (--rate) or unlimited.
        pa.field("rate_pps", pa.float64()),
        pa.field("rate_reason", _DICT),
        SHARD,
    ]
)

EVENTS = pa.schema(
    [
        SCAN_ID,
        pa.field("t", pa.float64(), nullable=False),
        pa.field("kind", _DICT, nullable=False),
        pa.field("payload", pa.string()),  # JSON
        SHARD,
    ]
)

TABLES: dict[str, pa.Schema] = {
    "ports": PORTS,
    "hosts": HOSTS,
    "telemetry": TELEMETRY,
    "events": EVENTS,
}

#: Keys of the Parquet key/value metadata every part file carries (values are UTF-8 text).
META_SCHEMA_VERSION = b"prtip_nb.schema_version"
META_TOOL_VERSION = b"prtip_nb.version"
META_SCAN_ID = b"prtip_nb.scan_id"
META_CONFIG = b"prtip_nb.config"  # ScanConfig as JSON
META_STARTED = b"prtip_nb.started"  # ISO 8601, UTC
META_ENDED = b"prtip_nb.ended"  # ISO 8601, UTC; empty while the scan runs


def file_schema(table: str) -> pa.Schema:
    """The schema of a part file of ``table``: the in-memory schema without ``scan_id``."""
    schema = TABLES[table]
    return schema.remove(schema.get_field_index("scan_id"))


def empty(table: str) -> pa.Table:
    """An empty table of ``table``'s schema."""
    # Not Schema.empty_table(): in pyarrow 26 it imports pandas, which the scan path avoids.
    schema = TABLES[table]
    return pa.Table.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def conform(table: pa.Table, name: str) -> pa.Table:
    """Return ``table`` with exactly the columns and types of schema ``name``.

    Missing nullable columns are filled with nulls; extra columns are dropped; types are cast.
    Raises ``ValueError`` naming the column when a non-nullable column is missing.
    """
    schema = TABLES[name]
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if not col.type.equals(field.type):
                col = col.cast(field.type)
            cols.append(col)
        elif field.nullable:
            cols.append(pa.nulls(table.num_rows, field.type))
        else:
            raise ValueError(f"{name} table lacks the required column {field.name!r}")
    return pa.Table.from_arrays(cols, schema=schema)
