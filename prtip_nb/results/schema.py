"""The Arrow schema of scan results, version 2 (an inventory). This module is its only owner.

Eight tables make a scan: ``ports``, ``hosts``, ``scripts``, ``os``, ``trace``, ``scan``,
``telemetry`` and ``events``. In a Parquet dataset each lives under
``<root>/scan_id=<id>/<table>/part-*.parquet``; ``scan_id`` is a hive partition key there, so
the part files do not repeat it (pyarrow.dataset and DuckDB both refuse a column that is both
in the file and in the path with other types). In memory, tables carry ``scan_id`` as their
first column. A table with no rows may have no part file at all: readers give it empty.

Version 2 adds what nmap users rely on and version 1 had no place for, so that nmap XML goes
in and comes back out with nothing lost:

- ``scripts``: NSE output, one row per ``<script>`` (pre, host, port and post phases).
- ``os``: one row per ``<osmatch>``, its ``<osclass>`` children as a list of structs.
- ``trace``: one row per traceroute ``<hop>``, with the probe port and protocol.
- ``scan``: one row per scan: command line, scanner and version, ``<scaninfo>``, run
  statistics, and where the scan came from (our scanner, or an imported file and its sha256).
- ``hosts`` gains every address and hostname, uptime, distance, times, the OS fingerprint
  and ports used, and ``<extraports>`` with their real state (``open|filtered`` included).
- ``ports`` gains nmap's other ``<service>`` facts: tunnel, method, conf, cpe, ostype,
  devicetype, servicefp and the service's hostname.
- ``reason`` may be null: nmap before 5 wrote none, and inventing one would be a lie.

SCRIPT DATA. nmap's structured script output is an ordered tree of ``<elem key=...>`` text
leaves and ``<table key=...>`` nodes, where keys are optional and may repeat. It is stored
twice, for two kinds of reader:

- ``data``: JSON text of that tree as nested ``[key, value]`` pairs (key null when the
  element has none; value a string for an elem, a list for a table). Lists, not objects:
  an object would lose the order, keyless items and repeated keys that nmap's writers keep,
  and the XML writer must give them back exactly. Arrow has no recursive type, so a nested
  struct/list type would fix the depth in the schema; JSON has no depth limit.
- ``elements``: the same tree flattened to ``list<struct<key, value>>`` leaves, where the
  key is the dotted path (a keyless item is numbered from 1 among its siblings, as a Lua
  array is), e.g. ``subject.commonName`` or ``keys.1.fingerprint``. DuckDB and pyarrow
  filter it without parsing JSON:
  ``list_filter(elements, lambda e: e.key = 'subject.commonName')``.

``ports.verified``/``handshakes`` and ``hosts.pseudo_services``/``pseudo_reason`` came later
in version 2; files without them read them as nulls (``conform``).

Datasets of version 1 still read: their files lack the new columns, which read as nulls, and
:func:`upgrade` derives what it can (``hostnames`` from ``hostname``).
"""

from __future__ import annotations

from collections.abc import Collection

import pyarrow as pa

SCHEMA_VERSION = 2

#: nmap's words, in the order a DataFrame should sort them.
STATES = ("open", "closed", "filtered", "unfiltered", "open|filtered", "closed|filtered")
HOST_STATES = ("up", "down", "unknown")

_DICT = pa.dictionary(pa.int32(), pa.string())
_TS = pa.timestamp("us", tz="UTC")

SCAN_ID = pa.field("scan_id", _DICT, nullable=False)
#: Script phases, in nmap's order of running them.
PHASES = ("pre", "host", "port", "post")

# Struct types of v2's list columns.
ADDRESS = pa.struct([("addr", pa.string()), ("addrtype", pa.string()), ("vendor", pa.string())])
# A hostname's "type" is nmap's word: "user" (as given) or "PTR" (reverse DNS).
# "confirmed": the PTR name's forward lookup gave the address back (ours; null from nmap).
HOSTNAME = pa.struct([("name", pa.string()), ("type", pa.string()), ("confirmed", pa.bool_())])
EXTRAREASON = pa.struct(
    [("reason", pa.string()), ("count", pa.uint32()), ("proto", pa.string()),
     ("ports", pa.string())]
)  # fmt: skip
EXTRAPORTS = pa.struct(
    [("state", pa.string()), ("count", pa.uint32()), ("reasons", pa.list_(EXTRAREASON))]
)
PORTUSED = pa.struct([("state", pa.string()), ("proto", pa.string()), ("port", pa.uint16())])
ELEMENT = pa.struct([("key", pa.string()), ("value", pa.string())])
OSCLASS = pa.struct(
    [("type", pa.string()), ("vendor", pa.string()), ("family", pa.string()),
     ("generation", pa.string()), ("accuracy", pa.uint8()), ("cpe", pa.list_(pa.string()))]
)  # fmt: skip
SCANINFO = pa.struct(
    [("type", pa.string()), ("scanflags", pa.string()), ("protocol", pa.string()),
     ("numservices", pa.uint32()), ("services", pa.string())]
)  # fmt: skip
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
        pa.field("reason", _DICT),  # null when the source gave none (nmap before 5)
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
        # v2: nmap's other <service> facts
        pa.field("tunnel", _DICT),  # "ssl": service "http" over TLS is nmap's ssl/http
        pa.field("method", _DICT),  # "probed" or "table"
        pa.field("conf", pa.uint8()),  # 0-10
        pa.field("cpe", pa.list_(pa.string())),
        pa.field("ostype", pa.string()),
        pa.field("devicetype", pa.string()),
        pa.field("servicefp", pa.string()),
        pa.field("service_hostname", pa.string()),
        # The layer-7 check (-sV, or verify=): True when data or a TLS handshake came back
        # on the open TCP port; null when not checked. ``handshakes``: connections it took.
        pa.field("verified", pa.bool_()),
        pa.field("handshakes", pa.uint8()),
    ]
)

HOSTS = pa.schema(
    [
        SCAN_ID,
        pa.field("host", pa.string(), nullable=False),
        pa.field("hostname", pa.string()),
        pa.field("family", pa.uint8(), nullable=False),
        pa.field("state", _DICT, nullable=False),
        pa.field("reason", _DICT),
        pa.field("rtt_ms", pa.float32()),
        pa.field("open", pa.uint32(), nullable=False),
        pa.field("closed", pa.uint32(), nullable=False),
        pa.field("filtered", pa.uint32(), nullable=False),
        pa.field("other", pa.uint32(), nullable=False),
        # v2: the inventory of a host
        pa.field("reason_ttl", pa.uint8()),
        pa.field("addresses", pa.list_(ADDRESS)),  # every <address>, in file order
        pa.field("mac", pa.string()),
        pa.field("mac_vendor", pa.string()),
        pa.field("hostnames", pa.list_(HOSTNAME)),  # every <hostname>, in file order
        pa.field("uptime_s", pa.uint64()),
        pa.field("lastboot", pa.string()),  # nmap's text, e.g. "Fri Dec  4 16:01:02 2026"
        pa.field("distance", pa.uint8()),  # network hops
        pa.field("srtt_us", pa.int64()),
        pa.field("rttvar_us", pa.int64()),
        pa.field("timeout_us", pa.int64()),
        pa.field("started", _TS),
        pa.field("ended", _TS),
        pa.field("timedout", pa.bool_()),  # nmap gave up on the host (--host-timeout)
        pa.field("comment", pa.string()),
        pa.field("extraports", pa.list_(EXTRAPORTS)),  # nmap's folded ports, any state
        pa.field("os_portused", pa.list_(PORTUSED)),
        pa.field("os_fingerprint", pa.list_(pa.string())),  # nmap writes one, the DTD allows more
        pa.field("sequences", pa.string()),  # JSON: tcp/ipid/tcpts sequence attributes
        # Accepts connections on (nearly) every port and says nothing: a SYN-ACK middlebox
        # or tarpit, whose ports are no services (engine.svstage). Null when not checked.
        pa.field("pseudo_services", pa.bool_()),
        pa.field("pseudo_reason", pa.string()),
    ]
)

SCRIPTS = pa.schema(
    [
        SCAN_ID,
        pa.field("host", pa.string()),  # null for pre and post scripts
        pa.field("proto", _DICT),  # null unless phase is "port"
        pa.field("port", pa.uint16()),
        pa.field("phase", _DICT, nullable=False),  # PHASES
        pa.field("id", pa.string(), nullable=False),
        pa.field("output", pa.string()),
        pa.field("data", pa.string()),  # JSON [[key, value], ...]: see SCRIPT DATA above
        pa.field("elements", pa.list_(ELEMENT)),  # the leaves, keyed by dotted path
    ]
)

OS = pa.schema(
    [
        SCAN_ID,
        pa.field("host", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("accuracy", pa.uint8()),
        pa.field("line", pa.uint32()),  # line of nmap-os-db that matched
        pa.field("classes", pa.list_(OSCLASS)),
    ]
)

TRACE = pa.schema(
    [
        SCAN_ID,
        pa.field("host", pa.string(), nullable=False),
        pa.field("ttl", pa.uint8(), nullable=False),
        pa.field("address", pa.string()),
        pa.field("rtt_ms", pa.float64()),
        pa.field("hostname", pa.string()),
        pa.field("probe_port", pa.uint16()),
        pa.field("probe_proto", _DICT),
    ]
)

SCAN = pa.schema(
    [
        SCAN_ID,
        pa.field("source", _DICT, nullable=False),  # "prtip_nb", "nmap-xml", "masscan-json", ...
        pa.field("source_file", pa.string()),
        pa.field("source_sha256", pa.string()),
        pa.field("scanner", pa.string()),
        pa.field("version", pa.string()),
        pa.field("args", pa.string()),  # the command line
        pa.field("started", _TS),
        pa.field("ended", _TS),
        pa.field("startstr", pa.string()),
        pa.field("xmloutputversion", pa.string()),
        pa.field("verbose", pa.uint8()),
        pa.field("debugging", pa.uint8()),
        pa.field("scaninfo", pa.list_(SCANINFO)),
        pa.field("timestr", pa.string()),
        pa.field("elapsed", pa.string()),  # nmap's text ("12.34"), kept as written
        pa.field("summary", pa.string()),
        pa.field("exit", pa.string()),
        pa.field("errormsg", pa.string()),
        pa.field("hosts_up", pa.uint32()),
        pa.field("hosts_down", pa.uint32()),
        pa.field("hosts_total", pa.uint32()),
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
    "scripts": SCRIPTS,
    "os": OS,
    "trace": TRACE,
    "scan": SCAN,
    "telemetry": TELEMETRY,
    "events": EVENTS,
}
#: The tables version 2 added: written only when they have rows.
INVENTORY = ("scripts", "os", "trace", "scan")

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


def upgrade(table: pa.Table, name: str, scan_ids: Collection[str]) -> pa.Table:
    """Derive the v2 columns of the rows of version 1 scans ``scan_ids`` (``table`` is
    already conformed to version 2; rows of other scans are left as they are).

    ``hosts.hostnames`` from ``hosts.hostname`` (type null: version 1 kept none).
    """
    if name != "hosts" or not scan_ids or table.num_rows == 0:
        return table
    from prtip_nb.results import _convert as cv  # here: the package imports this module

    old = set(scan_ids)
    sids = table["scan_id"].to_pylist()
    names = table["hostnames"].to_pylist()
    filled = [
        [{"name": h, "type": None}] if sid in old and h is not None and n is None else n
        for sid, n, h in zip(sids, names, table["hostname"].to_pylist(), strict=True)
    ]
    field = HOSTS.field("hostnames")
    return table.set_column(table.schema.get_field_index("hostnames"), field,
                            cv.column(filled, field.type))  # fmt: skip
