"""``diff(old, new)``: what changed between two scans, one row per change.

Semantics, in terms a scan can actually observe:

- A host is **present** in a scan when it answered: its hosts row says "up", or any of its
  ports rows is open, closed or unfiltered. A host that was probed but stayed silent is
  not present (silence is not proof of anything).
- A port's state is its row's state; a port with no row in a scan (not probed, or folded
  into nmap's extraports) counts as **not open**. Compare scans of the same port range.

Changes (``change`` column), for (host, proto, port):

- ``opened``: host present in both; port not open before (``before`` = its old state, or
  null without a row), open now.
- ``closed``: host present in both; port open before, not open now (``after`` = its new
  state, or null without a row).
- ``new-host``: host present now, not before: one row per open port (``before`` null,
  ``after`` "open"), or one row with null proto/port and ``after`` "up" if none is open.
- ``gone-host``: host present before, not now: one row per port that was open (``before``
  "open", ``after`` its new state or null), or one host row with ``before`` "up".
- ``service-changed``: open in both, and service, product or version differ; ``before``
  and ``after`` hold "service product version" (null parts left out).
- ``cpe-changed``: open in both, and the service's CPE list differs (``before``/``after``:
  the CPEs joined with spaces).
- ``script-changed``: a host in both scans, and a script's output differs, or the script
  ran in one scan only; one row per (host, proto, port, script id), port null for a host
  script; ``before``/``after`` hold "id: output" (null where it did not run).
- ``os-changed``: a host in both scans whose best OS match (the first ``os`` row) differs;
  proto/port null, ``before``/``after`` the match names.

The last three need ScanResults (a ports DataFrame has no scripts or OS).

Changes between non-open states (closed -> filtered) are not reported. Rows come sorted by
host (IP order), proto, port; dtypes are Arrow-backed (``host`` string, ``port`` uint16).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.results import _arrow
from prtip_nb.results import _convert as cv

if TYPE_CHECKING:
    import pandas as pd

    from prtip_nb.results import ScanResult

__all__ = ["CHANGES", "diff"]

CHANGES = ("opened", "closed", "new-host", "gone-host", "service-changed", "cpe-changed",
           "script-changed", "os-changed")  # fmt: skip
_KEY = ["host", "proto", "port"]
_RESULT = pa.schema(
    [
        pa.field("host", pa.string()),
        pa.field("proto", pa.string()),
        pa.field("port", pa.uint16()),
        pa.field("before", pa.string()),
        pa.field("after", pa.string()),
        pa.field("change", pa.dictionary(pa.int32(), pa.string())),
    ]
)


def _side(scan: ScanResult | pd.DataFrame, which: str) -> tuple[pa.Table, pa.Array]:
    """(ports as host/proto/port/state/svc, present hosts) of one side of the diff."""
    from prtip_nb.results import ScanResult

    if isinstance(scan, ScanResult):
        ports, hosts = scan.tables["ports"], scan.tables["hosts"]
        up = hosts.filter(pc.equal(pc.cast(hosts["state"], pa.string()), cv.scalar_str("up")))
        up_hosts = up["host"]
    else:
        ports = pa.Table.from_pandas(scan, preserve_index=False)
        missing = {"host", "proto", "port", "state"} - set(ports.column_names)
        if missing:
            raise ValueError(f"{which}: a ports DataFrame needs columns {sorted(missing)}")
        up_hosts = pa.chunked_array([], pa.string())
    if "scan_id" in ports.column_names and len(pc.unique(ports["scan_id"])) > 1:
        raise ValueError(f"{which} holds several scans; diff compares one scan with another")
    text = {name: pc.cast(ports[name], pa.string()) for name in ("host", "proto", "state")}
    empty = cv.scalar_str("")
    svc_parts = [
        pc.fill_null(pc.cast(ports[c], pa.string()), empty) if c in ports.column_names
        else pc.fill_null(pa.nulls(ports.num_rows, pa.string()), empty)
        for c in ("service", "product", "version")
    ]  # fmt: skip
    # Not null_handling="skip": in pyarrow 26 it drops the rows whose parts are all null.
    svc = pc.binary_join_element_wise(*svc_parts, cv.scalar_str(" "))
    svc = pc.utf8_trim_whitespace(pc.replace_substring_regex(svc, "  +", " "))
    svc = pc.if_else(pc.equal(svc, empty), pa.nulls(1, pa.string())[0], svc)
    table = pa.table(
        {**text, "port": pc.cast(ports["port"], pa.uint16()), "svc": svc}
    ).select(["host", "proto", "port", "state", "svc"])
    answered = table.filter(pc.is_in(table["state"], value_set=_arrow.RESPONSIVE_SET))["host"]
    present = pc.unique(pa.chunked_array(
        [*answered.chunks, *pc.cast(up_hosts, pa.string()).chunks], pa.string()))  # fmt: skip
    return table, present


def _is(col: Any, word: str) -> Any:
    return pc.fill_null(pc.equal(col, cv.scalar_str(word)), False)


def diff(old: ScanResult | pd.DataFrame, new: ScanResult | pd.DataFrame) -> pd.DataFrame:
    """The changes from scan ``old`` to scan ``new`` (ScanResults or ports DataFrames);
    see the module docstring for exactly what each ``change`` means."""
    from prtip_nb.results.result import to_pandas

    a, a_hosts = _side(old, "old")
    b, b_hosts = _side(new, "new")
    a = a.group_by(_KEY, use_threads=False).aggregate([("state", "first"), ("svc", "first")])
    b = b.group_by(_KEY, use_threads=False).aggregate([("state", "first"), ("svc", "first")])
    a = a.rename_columns([*_KEY, "state_a", "svc_a"])
    b = b.rename_columns([*_KEY, "state_b", "svc_b"])
    both = a.join(b, keys=_KEY, join_type="full outer", coalesce_keys=True, use_threads=False)
    in_a = pc.is_in(both["host"], value_set=a_hosts)
    in_b = pc.is_in(both["host"], value_set=b_hosts)
    open_a, open_b = _is(both["state_a"], "open"), _is(both["state_b"], "open")
    kept = pc.and_(in_a, in_b)
    svc_changed = pc.and_(
        pc.and_(kept, pc.and_(open_a, open_b)),
        pc.invert(pc.fill_null(pc.equal(both["svc_a"], both["svc_b"]),
                               pc.and_(pc.is_null(both["svc_a"]), pc.is_null(both["svc_b"])))),
    )  # fmt: skip
    parts = []
    for change, mask, before, after in (
        ("opened", pc.and_(kept, pc.and_(open_b, pc.invert(open_a))), "state_a", "state_b"),
        ("closed", pc.and_(kept, pc.and_(open_a, pc.invert(open_b))), "state_a", "state_b"),
        ("new-host", pc.and_(pc.invert(in_a), pc.and_(in_b, open_b)), "state_a", "state_b"),
        ("gone-host", pc.and_(in_a, pc.and_(pc.invert(in_b), open_a)), "state_a", "state_b"),
        ("service-changed", svc_changed, "svc_a", "svc_b"),
    ):
        rows = both.filter(mask)
        if change == "new-host":
            rows = rows.set_column(rows.schema.get_field_index("state_a"), "state_a",
                                   pa.nulls(rows.num_rows, pa.string()))  # fmt: skip
        parts.append(_rows(rows, before, after, change))
    parts.append(_host_rows(both, a_hosts, b_hosts))
    from prtip_nb.results import ScanResult

    if isinstance(old, ScanResult) and isinstance(new, ScanResult):
        parts.append(_inventory_rows(old, new, a_hosts, b_hosts,
                                     lambda: both.filter(pc.and_(kept, pc.and_(open_a, open_b)))))
    out = pa.concat_tables(parts)
    if out.num_rows:
        keys = pa.table({"host": _arrow.host_rank(out["host"]), "proto": out["proto"],
                         "port": out["port"], "change": out["change"]})  # fmt: skip
        by = [(k, "ascending") for k in keys.column_names]
        out = out.take(pc.sort_indices(keys, sort_keys=by))
    out = out.set_column(5, _RESULT.field("change"), pc.dictionary_encode(out["change"]))
    return to_pandas(out.cast(_RESULT))


def _rows(rows: pa.Table, before: str, after: str, change: str) -> pa.Table:
    return pa.table(
        {"host": rows["host"], "proto": rows["proto"], "port": rows["port"],
         "before": rows[before], "after": rows[after],
         "change": cv.strings([change] * rows.num_rows)},
    )  # fmt: skip


def _host_rows(both: pa.Table, a_hosts: pa.Array, b_hosts: pa.Array) -> pa.Table:
    """new-host/gone-host rows for hosts without an open port on the side that has them."""
    with_open_a = both.filter(_is(both["state_a"], "open"))["host"]
    with_open_b = both.filter(_is(both["state_b"], "open"))["host"]
    new = pc.filter(b_hosts, pc.invert(pc.is_in(b_hosts, value_set=a_hosts)))
    new = pc.filter(new, pc.invert(pc.is_in(new, value_set=with_open_b)))
    gone = pc.filter(a_hosts, pc.invert(pc.is_in(a_hosts, value_set=b_hosts)))
    gone = pc.filter(gone, pc.invert(pc.is_in(gone, value_set=with_open_a)))
    n, g = len(new), len(gone)
    return pa.table(
        {
            "host": pa.concat_arrays([new, gone]) if n + g else pa.nulls(0, pa.string()),
            "proto": pa.nulls(n + g, pa.string()),
            "port": pa.nulls(n + g, pa.uint16()),
            "before": cv.strings([None] * n + ["up"] * g),
            "after": cv.strings(["up"] * n + [None] * g),
            "change": cv.strings(["new-host"] * n + ["gone-host"] * g),
        }
    )



def _inventory_rows(old: ScanResult, new: ScanResult, a_hosts: pa.Array, b_hosts: pa.Array,
                    open_both: Callable[[], pa.Table]) -> pa.Table:  # fmt: skip
    """cpe-changed, script-changed and os-changed rows (see the module docstring).

    AT SCALE: the Python sets of open ports and kept hosts are made only when a side has
    CPEs, scripts or OS rows (a port scan has none): for two 13.1M-row scans, 262K dicts
    and 131K strings that nothing reads."""
    rows: list[tuple[Any, ...]] = []
    inventory = any(res.tables[name].num_rows for res in (old, new) for name in ("scripts", "os"))
    hosts: set[str] = (
        set(pc.filter(a_hosts, pc.is_in(a_hosts, value_set=b_hosts)).to_pylist())
        if inventory else set())  # fmt: skip

    def cpes(res: ScanResult) -> dict[tuple[Any, ...], str | None]:
        t = res.tables["ports"].select([*_KEY, "cpe"])
        t = t.filter(pc.is_valid(t["cpe"]))
        return {(r["host"], str(r["proto"]), r["port"]): " ".join(r["cpe"]) or None
                for r in t.to_pylist()}  # fmt: skip

    ca, cb = cpes(old), cpes(new)
    opened = ({(r["host"], r["proto"], r["port"]) for r in open_both().select(_KEY).to_pylist()}
              if ca or cb else set())  # fmt: skip
    for key in sorted(opened & (set(ca) | set(cb)), key=str):
        if ca.get(key) != cb.get(key):
            rows.append((*key, ca.get(key), cb.get(key), "cpe-changed"))

    def scripts(res: ScanResult) -> dict[tuple[Any, ...], str]:
        t = res.tables["scripts"].select(["host", "proto", "port", "phase", "id", "output"])
        out: dict[tuple[Any, ...], str] = {}
        for r in t.to_pylist():
            if r["phase"] in ("host", "port") and r["host"] in hosts:
                out.setdefault((r["host"], r["proto"], r["port"], r["id"]),
                               f"{r['id']}: {r['output']}")  # fmt: skip
        return out

    sa, sb = scripts(old), scripts(new)
    for key in set(sa) | set(sb):
        if sa.get(key) != sb.get(key):
            rows.append((*key[:3], sa.get(key), sb.get(key), "script-changed"))

    def best_os(res: ScanResult) -> dict[str, str]:
        out: dict[str, str] = {}
        for r in res.tables["os"].select(["host", "name"]).to_pylist():
            out.setdefault(r["host"], r["name"])
        return out

    oa, ob = best_os(old), best_os(new)
    for host in sorted(hosts & (set(oa) | set(ob))):
        if oa.get(host) != ob.get(host):
            rows.append((host, None, None, oa.get(host), ob.get(host), "os-changed"))
    cols: list[Any] = list(zip(*rows, strict=True)) if rows else [[]] * 6
    return pa.table(
        {"host": cv.strings(list(cols[0])), "proto": cv.strings(list(cols[1])),
         "port": cv.numbers(list(cols[2]), pa.uint16()),
         "before": cv.strings(list(cols[3])), "after": cv.strings(list(cols[4])),
         "change": cv.strings(list(cols[5]))}
    )  # fmt: skip
