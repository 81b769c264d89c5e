"""Arrow-only hosts logic: the hosts table derived from ports, and the per-host summary.

Tables here are sorted by (scan_id, host), so a host's rows are one contiguous run. Runs
replace ``Table.group_by``, which (through Acero) imports pandas, and they need no hashing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.results import _convert as cv
from prtip_nb.results import schema
from prtip_nb.results._arrow import (
    OPEN,
    RESPONSIVE_SET,
    SEP,
    TRUE,
    fix_dictionary,
    host_rank,
    set_column,
    text_rank,
)


def _codes(col: pa.ChunkedArray) -> pa.Array:
    """Values that compare equal where ``col`` does (dictionary indices after unifying)."""
    if not pa.types.is_dictionary(col.type):
        return col.combine_chunks()
    unified = pa.table({"c": col}).unify_dictionaries().combine_chunks()["c"]
    return unified.chunk(0).indices if unified.num_chunks else pa.nulls(0, pa.int32())


def group_runs(keys: Sequence[pa.Array]) -> tuple[pa.Array, pa.Array]:
    """(group id of each row, start row of each group) for rows sorted by ``keys``."""
    n = len(keys[0])
    change = None
    for k in keys:
        ne = pc.not_equal(k.slice(1), k.slice(0, n - 1))
        change = ne if change is None else pc.or_(change, ne)
    assert change is not None
    starts_mask = pa.concat_arrays([TRUE, change])
    gid = pc.subtract(
        pc.cumulative_sum(pc.cast(starts_mask, pa.int64())), cv.numbers([1], pa.int64())[0]
    )
    return gid, pc.indices_nonzero(starts_mask)


def _array(values: Any) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _group_sum(flags: Any, starts: pa.Array) -> pa.Array:
    """Per group, how many ``flags`` are true (differences of a prefix sum)."""
    flags = _array(flags)
    prefix = pa.concat_arrays(
        [cv.numbers([0], pa.uint64()), pc.cumulative_sum(pc.cast(flags, pa.uint64()))]
    )
    ends = pa.concat_arrays([starts.slice(1), cv.numbers([len(flags)], pa.uint64())])
    return pc.cast(pc.subtract(prefix.take(ends), prefix.take(starts)), pa.uint32())


def _first(
    gid: pa.Array,
    values: Any,
    m: int,
    *,
    where: Any,
    by: Any = None,
) -> pa.Array:
    """Per group (``m`` of them), the first of ``values`` where ``where`` holds, in row order
    or, given ``by``, in ascending ``by`` order (nulls last). Null for a group with none."""
    t = pa.table({"g": gid, "v": values} | ({} if by is None else {"by": by})).filter(where)
    if by is not None:  # stable sort: ties stay in row order
        t = t.take(
            pc.sort_indices(t, sort_keys=[("g", "ascending"), ("by", "ascending", "at_end")])
        )
    if t.num_rows == 0:
        return pa.nulls(m, t.schema.field("v").type)
    g = t["g"].combine_chunks()
    firsts = t.filter(pa.concat_arrays([TRUE, pc.not_equal(g.slice(1), g.slice(0, len(g) - 1))]))
    pos = pc.index_in(cv.numbers(range(m), pa.int64()), value_set=firsts["g"].combine_chunks())
    return firsts["v"].take(pos)


# --- hosts --------------------------------------------------------------------------------


def _host_key(t: pa.Table) -> Any:
    return pc.binary_join_element_wise(pc.cast(t["scan_id"], pa.string()), t["host"], SEP)


def sort_hosts(hosts: pa.Table) -> pa.Table:
    """Hosts by scan_id then IP order, host state words in HOST_STATES order."""
    hosts = schema.conform(hosts, "hosts")
    if hosts.num_rows:
        keys = pa.table({"scan": text_rank(hosts["scan_id"]), "host": host_rank(hosts["host"])})
        by = [("scan", "ascending"), ("host", "ascending")]
        hosts = hosts.take(pc.sort_indices(keys, sort_keys=by))
    return set_column(hosts, "state", fix_dictionary(hosts["state"], schema.HOST_STATES))


def derive_hosts(ports: pa.Table) -> pa.Table:
    """One hosts row per (scan_id, host) of a normalized (sorted) ports table.

    "up" with the reason of the earliest responsive row (by first_seen) when any port
    answered; otherwise "unknown" / "no-response" (silence is not proof of "down").
    """
    if ports.num_rows == 0:
        return schema.empty("hosts")
    few = _few_hosts(ports)
    if few is not None:
        return few
    gid, starts = group_runs([_codes(ports["scan_id"]), ports["host"].combine_chunks()])
    m = len(starts)
    state = ports["state"]
    first_rows = ports.select(["scan_id", "host", "family"]).take(starts)
    responsive = pc.is_in(state, value_set=RESPONSIVE_SET)
    first_reason = _first(gid, ports["reason"], m, where=responsive, by=ports["first_seen"])
    reason = pc.cast(first_reason, pa.string())
    counts = {
        word: _group_sum(pc.is_in(state, value_set=cv.plain_strings([word])), starts)
        for word in ("open", "closed", "filtered")
    }
    total = _group_sum(pc.is_valid(state), starts)
    up = pc.is_valid(reason)
    hosts = pa.table(
        {
            **{name: first_rows[name] for name in first_rows.column_names},
            "hostname": _first(gid, ports["hostname"], m, where=pc.is_valid(ports["hostname"])),
            "state": cv.plain_strings(["unknown", "up"]).take(pc.cast(up, pa.int8())),
            "reason": pc.coalesce(reason, cv.scalar_str("no-response")),
            "rtt_ms": _first(
                gid, ports["rtt_ms"], m, where=pc.is_valid(ports["rtt_ms"]), by=ports["rtt_ms"]
            ),
            **counts,
            "other": pc.subtract(
                total, pc.add(pc.add(counts["open"], counts["closed"]), counts["filtered"])
            ),
        }
    )
    return sort_hosts(hosts)


def host_states(batches: Sequence[pa.RecordBatch]) -> pa.Table:
    """``host`` (IP order) and ``state`` of every host in ports rows as appended: "up" when
    any of its rows answered, else "unknown", as ``derive_hosts`` says of them normalized.

    WHY. A stage that only asks which hosts are up (reverse DNS, after every SYN scan
    without -n) used ``snapshot()``, whose normalize_ports made a sorted copy of every
    row beside the rows still held: the scan's peak, ~15 B a port on 65,535 ports (issue
    3). This reads two columns a batch at a time: temporaries of one batch and the hosts.
    """
    seen: list[pa.Array] = []
    up: list[pa.Array] = []
    for batch in batches:
        host = batch.column("host")
        seen.append(pc.unique(host))
        answered = pc.is_in(batch.column("state"), value_set=RESPONSIVE_SET)
        up.append(pc.unique(pc.filter(host, answered)))
    if not seen:
        return pa.table({"host": cv.plain_strings([]), "state": cv.plain_strings([])})
    hosts = pc.unique(pa.concat_arrays(seen)).drop_null()
    hosts = hosts.take(pc.sort_indices(host_rank(hosts)))
    state = cv.plain_strings(["unknown", "up"]).take(
        pc.cast(pc.is_in(hosts, value_set=pa.concat_arrays(up)), pa.int8()))
    return pa.table({"host": hosts, "state": state})


FEW_HOSTS = 32


def _few_hosts(ports: pa.Table) -> pa.Table | None:
    """derive_hosts for one scan of at most FEW_HOSTS hosts (the common case), or None.

    Each host's rows are one slice, reduced with scalar aggregates: no per-row temporaries
    (the general path's group ids and prefix sums cost ~60 B per row at finish).
    """
    if len(pc.unique(ports["scan_id"])) != 1:
        return None
    hosts = pc.unique(ports["host"])
    if len(hosts) > FEW_HOSTS:
        return None
    col = ports["host"]
    starts = sorted(pc.index(col, h).as_py() for h in hosts)
    ends = [*starts[1:], ports.num_rows]
    rows: dict[str, list[Any]] = {}  # the columns _host_row gives; the others stay null
    for a, b in zip(starts, ends, strict=True):
        for name, value in _host_row(ports.slice(a, b - a)).items():
            rows.setdefault(name, []).append(value)
    return sort_hosts(cv.table(rows, schema.HOSTS))


def _host_row(part: pa.Table) -> dict[str, Any]:
    state = part["state"]
    counts = {c["values"]: c["counts"] for c in pc.value_counts(state).to_pylist()}
    responsive = pc.is_in(state, value_set=RESPONSIVE_SET)
    reason: str | None = None
    if pc.any(responsive).as_py():
        seen = pc.if_else(responsive, part["first_seen"], pa.nulls(1, part["first_seen"].type)[0])
        reason = part["reason"][pc.index(seen, pc.min(seen)).as_py()].as_py()
    names = part["hostname"]
    known = names.drop_null() if names.null_count < len(names) else None
    row = {"open": counts.get("open", 0), "closed": counts.get("closed", 0),
           "filtered": counts.get("filtered", 0)}
    return {
        "scan_id": part["scan_id"][0].as_py(), "host": part["host"][0].as_py(),
        "hostname": known[0].as_py() if known is not None and len(known) else None,
        "family": part["family"][0].as_py(),
        "state": "up" if reason is not None else "unknown",
        "reason": reason if reason is not None else "no-response",
        "rtt_ms": pc.min(part["rtt_ms"]).as_py(),
        **row,
        "other": sum(v for k, v in counts.items() if k is not None) - sum(row.values()),
    }


# --- summary ------------------------------------------------------------------------------


def summary_table(ports: pa.Table, hosts: pa.Table, *, with_scan_id: bool) -> pa.Table:
    """Per host: counts and its open ports as text ("22/tcp, 80/tcp"), in hosts order."""
    open_rows = ports.filter(pc.is_in(ports["state"], value_set=OPEN))
    names = ["host", "hostname", "state", "open", "closed", "filtered", "other"]
    if with_scan_id:
        names = ["scan_id", *names]
    empty = cv.scalar_str("")
    if open_rows.num_rows == 0:
        return hosts.select(names).append_column(
            "open_ports", pc.fill_null(pa.nulls(hosts.num_rows, pa.string()), empty)
        )
    _, starts = group_runs([_codes(open_rows["scan_id"]), open_rows["host"].combine_chunks()])
    label = pc.binary_join_element_wise(
        pc.cast(open_rows["port"], pa.string()),
        pc.cast(open_rows["proto"], pa.string()),
        cv.scalar_str("/"),
    )
    offsets = pa.concat_arrays([starts, cv.numbers([open_rows.num_rows], pa.uint64())])
    lists = pa.ListArray.from_arrays(pc.cast(offsets, pa.int32()), label.combine_chunks())
    joined = pc.binary_join(lists, cv.scalar_str(", "))
    pos = pc.index_in(_host_key(hosts), value_set=_host_key(open_rows.take(starts)))
    open_ports = pc.fill_null(joined.take(pos), empty)
    return hosts.select(names).append_column("open_ports", open_ports)


def attach_columns(hosts: pa.Table, values: dict[str, dict[str, Any]]) -> pa.Table:
    """Set hosts columns from ``values`` (host -> {column: value}); other rows keep theirs."""
    if not values or not hosts.num_rows:
        return hosts
    names = hosts["host"].to_pylist()
    for col in {c for v in values.values() for c in v}:
        field = hosts.schema.field(col)
        current = hosts[col].to_pylist()
        filled = [values[h][col] if h in values and col in values[h] else cur
                  for h, cur in zip(names, current, strict=True)]  # fmt: skip
        hosts = set_column(hosts, col, cv.column(filled, field.type))
    return hosts


#: Hosts columns a shard's table cannot give for the whole host: its counts and first reply
#: cover only its share of the ports, so they come from the merged ports instead.
_FROM_PORTS = frozenset({"scan_id", "host", "family", "open", "closed", "filtered", "other",
                         "rtt_ms"})


def merge_shard_hosts(derived: pa.Table, shards: Sequence[pa.Table]) -> pa.Table:
    """The hosts table of a sharded scan: ``derived`` (from every shard's ports) with what
    only the shards' own hosts tables know (``pseudo_services``, OS columns, names, ...).

    Per host and column, the first shard with a value gives it; ``pseudo_services`` is
    true when any shard flagged the host (each shard sees a share of its ports), and a host
    no port showed up but a shard found up (a ping reply) is up with that shard's reason.
    A host only the shards' tables have (no port row) is kept as they give it.
    """
    shards = [schema.conform(t, "hosts") for t in shards if t.num_rows]
    if not shards:
        return derived
    derived = schema.conform(derived, "hosts")
    names = set(derived["host"].to_pylist())
    values: dict[str, dict[str, Any]] = {}
    extra: list[pa.Table] = []
    for t in shards:
        keep = [c for c in t.column_names
                if c not in _FROM_PORTS and t[c].null_count < t.num_rows]  # fmt: skip
        cols = {c: t[c].to_pylist() for c in ["host", *keep]}
        states = cols.get("state", [None] * t.num_rows)
        for i, host in enumerate(cols["host"]):
            if host not in names:
                continue
            mine = values.setdefault(host, {})
            for c in keep:
                v = cols[c][i]
                if v is None or c in ("state", "reason"):
                    continue
                if c == "pseudo_services":
                    mine[c] = bool(mine.get(c)) or bool(v)
                else:
                    mine.setdefault(c, v)
            if states[i] == "up":
                mine.setdefault("_up_reason", cols.get("reason", [None] * t.num_rows)[i])
        missing = pc.invert(pc.is_in(t["host"], value_set=derived["host"].combine_chunks()))
        extra.append(t.filter(missing))
    base = dict(zip(derived["host"].to_pylist(), derived["state"].to_pylist(), strict=True))
    for host, mine in values.items():
        reason = mine.pop("_up_reason", None)
        if base.get(host) != "up" and reason is not None:
            mine.update(state="up", reason=reason)
    hosts = attach_columns(derived, values)
    if any(t.num_rows for t in extra):
        seen: set[str] = set()
        rest = []
        for t in extra:  # a host in two shards' tables only: the first one's row
            fresh = [h not in seen for h in t["host"].to_pylist()]
            seen.update(t["host"].to_pylist())
            rest.append(t.filter(cv.bools(fresh)))
        hosts = pa.concat_tables([hosts, *rest])
    return sort_hosts(hosts)
