"""ScanResult -> nmap XML that validates against nmap.dtd and that ndiff reads.

Choices, each forced by nmap's DTD or by what its readers expect:

- ``scanner="nmap"`` (the DTD allows no other value); a comment names prtip_nb, and a scan
  made by prtip_nb carries ``version="prtip_nb <version>"``. An imported nmap scan gets its
  own args, version, start time and ``<scaninfo>`` back, so ndiff's banner matches too.
- Every ports row becomes a ``<port>``: the writer folds nothing. Ports that the hosts
  table counts but that have no row (nmap's ``<extraports>`` on import) are folded back
  into ``<extraports>`` per state.
- ``<service>`` needs name, method and conf: with product/version/extrainfo it is written
  as ``method="probed" conf="10"``, a bare name as ``method="table" conf="3"``.
- TLS columns become a ``ssl-cert`` script (``_tls``), else a banner a ``banner`` script,
  in the shape of those nmap scripts (never both: see ``_port_xml``). A null TTL is written
  as nmap writes "none": 0.
- A discovery result (``pn.discover``, ``prtip-nb scan -sn``; or an imported ``nmap -sn``
  file) is written in ``nmap -sn -v``'s shape: args with ``-sn``, no ``<scaninfo>``, every
  host (down ones too) with its status and reason, ``<times>`` when it has an RTT, and no
  ``<ports>``.
- Schema v2's inventory is written back in nmap's element order: the ``scan`` row gives
  ``<nmaprun>``, ``<scaninfo>``, ``<verbose>``/``<debugging>`` and ``<runstats>`` as they
  were; every address and hostname, ``<extraports>`` with their reasons, the service's
  cpe/tunnel/method/conf, ``scripts`` (pre, host, port, post; with their elem/table data),
  ``os``, uptime, distance, sequences, ``trace`` and times. A port's stored scripts win over
  the tls/banner columns; without any, those columns give one script as before.
- A masscan import says so: ``version="masscan"``, no ``args`` (masscan records none, and an
  invented command line would lie), and the comment names the file it came from.

Imports pyarrow and the stdlib only: ``prtip-nb scan -oX`` does not pay for pandas.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb._fileio import atomic_file
from prtip_nb.errors import DatasetError
from prtip_nb.interop import _nmap_inventory, _tls, _xml
from prtip_nb.interop._cmdline import asked as _asked
from prtip_nb.interop._cmdline import command_line, is_discovery
from prtip_nb.results import _convert as cv
from prtip_nb.results import _hosts

if TYPE_CHECKING:
    from prtip_nb.results import ScanResult

_SCAN_TYPES = {"connect", "syn", "ack", "null", "xmas", "window", "maimon", "fin", "udp"}
# The text columns first (escaped in bulk by _values), then the service's other facts
# (service_hostname ... conf are text too), then the TLS columns and cpe (Python values).
_ROW_COLUMNS = (
    "proto", "port", "state", "reason", "ttl", "service", "product", "version", "extrainfo",
    "banner", "service_hostname", "ostype", "devicetype", "servicefp", "tunnel", "method",
    "conf", "cpe", "tls_subject", "tls_issuer", "tls_san", "tls_not_after",
)  # fmt: skip
_N_TEXT = 17  # _ROW_COLUMNS[:_N_TEXT] go through _values
_SVC_ATTRS = (("hostname", 10), ("ostype", 11), ("devicetype", 12), ("servicefp", 13),
              ("tunnel", 14))  # fmt: skip
_NONE3, _NONE4, _NONE5 = (None,) * 3, (None,) * 4, (None,) * 5
_SLICE = 65536
_FOLDED = ("open", "closed", "filtered")  # states with a count column: "other" has no name


def write_nmap_xml(result: ScanResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` (one scan) as nmap XML at ``path``, atomically; return the path."""
    if result.meta is None:
        raise DatasetError(
            f"nmap XML holds one scan, and this result merges {len(result.scans)}: "
            "read one scan_id with read_scans(root, scan_id) first"
        )
    path = Path(path)
    try:
        with atomic_file(path, "w", encoding="utf-8") as out:
            _write(result, out)
    except OSError as exc:
        raise DatasetError(f"could not write {path}: {exc}") from exc
    return path


def _pylist(table: pa.Table) -> list[dict[str, Any]]:
    """``table.to_pylist()``, timestamps as int µs since the epoch: pyarrow converts
    tz-aware timestamps to datetime through pandas, which this module must not import."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), pa.int64()))
    return table.to_pylist()


def _first_row(table: pa.Table) -> dict[str, Any] | None:
    return _pylist(table.slice(0, 1))[0] if table.num_rows else None


def _by_host(table: pa.Table) -> dict[str | None, list[dict[str, Any]]]:
    """Rows of a small inventory table, in table order, grouped by host."""
    out: dict[str | None, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        out.setdefault(row["host"], []).append(row)
    return out


def _timestr(epoch: int) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(epoch))


def _write(result: ScanResult, out: TextIO) -> None:
    meta = result.meta
    assert meta is not None
    cfg = meta.config
    ports, hosts = result.tables["ports"], result.tables["hosts"]
    run = _first_row(result.tables["scan"])
    if run is not None and run["source_sha256"] is None:
        run = None  # a scan of ours, or a v1 import: only an import's row has <nmaprun> facts
    source = run["source"] if run else cfg.get("source")
    imported = source == "nmap-xml"
    masscan = str(source or "").startswith("masscan")
    start = int(meta.started.timestamp())
    sweep = is_discovery(cfg)
    if imported:
        args, version = cfg.get("args"), cfg.get("version")
    elif masscan:
        args, version = None, "masscan"
    else:
        args, version = command_line(cfg), f"prtip_nb {meta.tool_version}"
    if run:
        start = run["started"] // 1_000_000 if run["started"] is not None else start
    startstr = run["startstr"] if run else _timestr(start)
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n')
    origin = (f" from {source} file {run['source_file']} (sha256 {run['source_sha256']})"
              if run and run.get("source_file") else "")  # fmt: skip
    comment = f"written by prtip_nb {meta.tool_version} from scan {meta.scan_id}{origin}"
    out.write(f"<!-- {_xml.text(comment).replace('--', '- -')} -->\n")
    head = '<nmaprun scanner="nmap"'
    if args is not None:
        head += f' args="{_xml.attr(args)}"'
    xmlversion = (run or {}).get("xmloutputversion") or "1.05"
    head += f' start="{start}"' + (f' startstr="{_xml.attr(startstr)}"' if startstr else "")
    head += f' version="{_xml.attr(version or "")}" xmloutputversion="{_xml.attr(xmlversion)}">\n'
    out.write(head)
    # An imported file's scaninfo as it was (none at all in an nmap -sn file); a ping
    # sweep of ours has none either.
    if run is not None:
        infos = [{k: v for k, v in i.items() if v is not None} for i in run["scaninfo"] or ()]
    elif imported:
        infos = cfg.get("scaninfo") or []
    else:
        infos = [] if sweep or masscan else _scaninfo(cfg, ports)
    for info in infos:
        out.write("<scaninfo" + "".join(f' {k}="{_xml.attr(v)}"' for k, v in info.items()) + "/>\n")
    # A sweep lists its down hosts too, which nmap -sn does at verbosity 1 (-v).
    verbose = run["verbose"] if run and run["verbose"] is not None else int(sweep)
    debugging = run["debugging"] if run and run["debugging"] is not None else 0
    out.write(f'<verbose level="{verbose}"/>\n<debugging level="{debugging}"/>\n')
    scripts = _by_phase(result.tables["scripts"])
    _write_scripts(out, "prescript", scripts.get("pre"))
    derived = _hosts.derive_hosts(ports)
    missing = derived.filter(pc.invert(pc.is_in(derived["host"], value_set=hosts["host"])))
    all_hosts = pa.concat_tables([hosts, missing]) if missing.num_rows else hosts
    inventory = {
        "scripts": scripts, "os": _by_host(result.tables["os"]),
        "trace": _by_host(result.tables["trace"]),
    }  # fmt: skip
    _write_hosts(out, all_hosts, derived, ports, inventory, sweep=sweep)
    _write_scripts(out, "postscript", scripts.get("post"))
    _write_runstats(out, meta.started, meta.ended, all_hosts, run)
    out.write("</nmaprun>\n")


def _by_phase(scripts: pa.Table) -> dict[Any, Any]:
    """{"pre": [rows], "post": [rows], "host": {host: [rows]}, "port": {(host, proto, port):
    [rows]}}, each list in table order."""
    out: dict[Any, Any] = {"host": {}, "port": {}}
    for row in scripts.to_pylist():
        phase = row["phase"]
        if phase == "port":
            out["port"].setdefault((row["host"], row["proto"], row["port"]), []).append(row)
        elif phase == "host":
            out["host"].setdefault(row["host"], []).append(row)
        else:
            out.setdefault(phase, []).append(row)
    return out


def _scripts_xml(rows: list[dict[str, Any]]) -> str:
    return "".join(_nmap_inventory.script_xml(r["id"], r["output"], r["data"]) for r in rows)


def _write_scripts(out: TextIO, tag: str, rows: list[dict[str, Any]] | None) -> None:
    if rows:
        out.write(f"<{tag}>{_scripts_xml(rows)}</{tag}>\n")


def _scaninfo(cfg: dict[str, Any], ports: pa.Table) -> list[dict[str, Any]]:
    """One ``<scaninfo>`` per protocol: the port spec asked for, else the ports probed."""
    from prtip_nb.errors import PortSpecError

    method = cfg.get("method") if cfg.get("method") in _SCAN_TYPES else "connect"
    try:
        asked = _asked(cfg)
        ranges = {p: list(getattr(asked, p)) for p in asked.protos}
    except (PortSpecError, TypeError, ValueError):
        ranges = {}
    for proto in pc.unique(pc.cast(ports["proto"], pa.string())).to_pylist():
        if proto not in ranges:
            mine = pc.equal(pc.cast(ports["proto"], pa.string()), cv.scalar_str(proto))
            ranges[proto] = _ranges(pc.unique(ports.filter(mine)["port"]).to_pylist())
    return [
        {
            "type": method if proto == "tcp" else "udp",
            "protocol": proto,
            "numservices": sum(hi - lo + 1 for lo, hi in spans),
            "services": ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spans),
        }
        for proto, spans in ranges.items()
        if proto in ("tcp", "udp")
    ]


def _ranges(ports: list[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for p in sorted(ports):
        if spans and p == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], p)
        else:
            spans.append((p, p))
    return spans


def _values(col: pa.ChunkedArray) -> list[Any]:
    """A column as Python values, text already escaped for an attribute value."""
    if pa.types.is_dictionary(col.type):  # to_pylist on a dictionary column is 30x slower
        col = pc.cast(col, col.type.value_type)
    if col.null_count == len(col):
        return [None] * len(col)
    values = col.to_pylist()
    needs = pa.types.is_string(col.type) and pc.any(
        pc.match_substring_regex(col, _xml.NEEDS_ESCAPE)
    ).as_py()
    if needs:
        return [v if v is None else _xml.attr(v) for v in values]
    return values


def _rows(ports: pa.Table) -> Iterator[tuple[Any, ...]]:
    """Port rows as tuples of ``_ROW_COLUMNS``, converted a slice at a time."""
    for offset in range(0, ports.num_rows, _SLICE):
        part = ports.slice(offset, _SLICE)
        text = [_values(part[name]) for name in _ROW_COLUMNS[:_N_TEXT]]
        rest = [part[name].to_pylist() for name in _ROW_COLUMNS[_N_TEXT:]]
        yield from zip(*text, *rest, strict=True)


def _host_ranges(ports: pa.Table) -> dict[str, tuple[int, int]]:
    """host -> (first row, end row) in ``ports``, whose rows are grouped by host."""
    if ports.num_rows == 0:
        return {}
    _, starts = _hosts.group_runs([ports["host"].combine_chunks()])
    first = starts.to_pylist()
    ends = first[1:] + [ports.num_rows]
    names = ports["host"].take(starts).to_pylist()
    return {h: (a, b) for h, a, b in zip(names, first, ends, strict=True)}


def _port_xml(r: tuple[Any, ...], scripts: list[dict[str, Any]] | None) -> str:
    """One ``<port>`` element; the text fields of ``r`` are already escaped (``_values``)."""
    proto, port, state, reason, ttl, service, product, version, extra, banner = r[:10]
    method, conf, cpe = r[15], r[16], r[17]
    # A null reason (nmap before 5 wrote none): the DTD requires the attribute, and an empty
    # one reads back as null, where a word would be invented.
    why = reason if reason is not None else ""
    xml = (f'<port protocol="{proto}" portid="{port}"><state state="{state}" '
           f'reason="{why}" reason_ttl="{ttl or 0}"/>')  # fmt: skip
    if service or product is not None or version is not None or extra is not None:
        xml += f'<service name="{service or "unknown"}"'
        if (product, version, extra) != _NONE3:  # tuple compares run in C: most rows skip
            for key, value in (("product", product), ("version", version), ("extrainfo", extra)):
                if value is not None:
                    xml += f' {key}="{value}"'
        if r[10:15] != _NONE5:
            for key, i in _SVC_ATTRS:
                if r[i] is not None:
                    xml += f' {key}="{r[i]}"'
        if method is None:  # ours: probed when detection named a product, else the table
            method, conf = ("probed", 10) if product or version or extra else ("table", 3)
        xml += f' method="{method}" conf="{conf if conf is not None else 3}"'
        if cpe:
            xml += ">" + "".join(f"<cpe>{_xml.text(c)}</cpe>" for c in cpe) + "</service>"
        else:
            xml += "/>"
    if scripts:  # what the source wrote, every script, in its order
        xml += _scripts_xml(scripts)
    # Ours: one script at most, since ndiff 7.93 (Debian's, Python 3) crashes loading a port
    # with two (ScriptResult.sort(), ndiff.py:1423). TLS facts win over a banner.
    elif r[18:] != _NONE4:
        xml += _tls.script_xml(dict(zip(_ROW_COLUMNS[18:], r[18:], strict=True)))
    elif banner:
        xml += f'<script id="banner" output="{banner}"/>'
    return xml + "</port>\n"


def _host_head(out: TextIO, h: dict[str, Any]) -> None:
    """``<host ...><status/>`` and the addresses and hostnames of hosts row ``h``."""
    attrs = ""
    for key, column in (("starttime", "started"), ("endtime", "ended")):
        if h.get(column) is not None:
            attrs += f' {key}="{h[column] // 1_000_000}"'
    if h.get("timedout") is not None:
        attrs += f' timedout="{"true" if h["timedout"] else "false"}"'
    if h.get("comment") is not None:
        attrs += f' comment="{_xml.attr(h["comment"])}"'
    reason = h["reason"] if h["reason"] is not None else ""  # as for ports: see _port_xml
    ttl = h.get("reason_ttl") or 0
    out.write(f'<host{attrs}><status state="{_xml.attr(h["state"])}" '
              f'reason="{_xml.attr(reason)}" reason_ttl="{ttl}"/>\n')  # fmt: skip
    addresses = h.get("addresses")
    if addresses is None:  # ours: the one address (a v1 dataset: also its name, below)
        family = "ipv6" if h["family"] == 6 else "ipv4"
        addresses = [{"addr": h["host"], "addrtype": family, "vendor": None}]
        if h.get("mac"):
            addresses.append({"addr": h["mac"], "addrtype": "mac", "vendor": h.get("mac_vendor")})
    for a in addresses:
        vendor = f' vendor="{_xml.attr(a["vendor"])}"' if a["vendor"] is not None else ""
        out.write(f'<address addr="{_xml.attr(a["addr"])}" addrtype="{_xml.attr(a["addrtype"])}"'
                  f"{vendor}/>\n")  # fmt: skip
    names = h.get("hostnames")
    if names is None and h.get("addresses") is None:  # ours: always the element
        names = [{"name": h["hostname"], "type": "user"}] if h["hostname"] else []
    if names is not None:
        out.write("<hostnames>\n")
        for n in names:
            attrs = "".join(f' {k}="{_xml.attr(n[k])}"' for k in ("name", "type") if n[k])
            out.write(f"<hostname{attrs}/>\n")
        out.write("</hostnames>\n")


def _host_tail(out: TextIO, h: dict[str, Any], inventory: dict[str, Any], sweep: bool) -> None:
    """What follows ``<ports>`` in a ``<host>``, in nmap's order, then ``</host>``."""
    addr = h["host"]
    matches = inventory["os"].get(addr)
    if matches or h.get("os_portused") is not None or h.get("os_fingerprint") is not None:
        out.write(_nmap_inventory.os_xml(matches or [], h))
    if h.get("uptime_s") is not None:
        boot = f' lastboot="{_xml.attr(h["lastboot"])}"' if h.get("lastboot") else ""
        out.write(f'<uptime seconds="{h["uptime_s"]}"{boot}/>\n')
    if h.get("distance") is not None:
        out.write(f'<distance value="{h["distance"]}"/>\n')
    if h.get("sequences"):
        for tag, attrs in json.loads(h["sequences"]).items():
            text = "".join(f' {k}="{_xml.attr(v)}"' for k, v in attrs.items())
            out.write(f"<{tag}{text}/>\n")
    _write_scripts(out, "hostscript", inventory["scripts"]["host"].get(addr))
    hops = inventory["trace"].get(addr)
    if hops:
        out.write(_nmap_inventory.trace_xml(hops))
    if h.get("srtt_us") is not None:
        out.write(f'<times srtt="{h["srtt_us"]}" rttvar="{h["rttvar_us"]}" '
                  f'to="{h["timeout_us"]}"/>\n')  # fmt: skip
    elif sweep and h.get("rtt_ms") is not None:  # ours: nmap's unit is microseconds
        srtt = max(1, round(h["rtt_ms"] * 1000))
        out.write(f'<times srtt="{srtt}" rttvar="{srtt}" to="{max(100000, 4 * srtt)}"/>\n')
    out.write("</host>\n")


def _write_hosts(out: TextIO, hosts: pa.Table, derived: pa.Table, ports: pa.Table,
                 inventory: dict[str, Any], *, sweep: bool = False) -> None:  # fmt: skip
    # Counts of listed rows per host: what the hosts table counts beyond them was folded.
    listed = {h["host"]: h for h in derived.select(["host", *_FOLDED]).to_pylist()}
    ranges = _host_ranges(ports)
    port_scripts = inventory["scripts"]["port"]
    rows, pos = _rows(ports), 0
    for h in _pylist(hosts):
        addr = h["host"]
        _host_head(out, h)
        first, end = ranges.get(addr, (pos, pos))
        extraports = h.get("extraports")
        # nmap -sn has no <ports>; nor has a host that was down or never port-scanned. An
        # import says which hosts had the element: extraports is a list exactly for those.
        if h.get("addresses") is not None:
            skip = extraports is None and first == end
        else:
            skip = sweep or (first == end and not extraports and h["state"] != "up")
        if skip:
            _host_tail(out, h, inventory, sweep)
            continue
        out.write("<ports>")
        if extraports is not None:  # as the source wrote them, any state, with reasons
            for e in extraports:
                out.write(f'<extraports state="{_xml.attr(e["state"])}" count="{e["count"]}">\n')
                for r in e["reasons"] or ():
                    attrs = "".join(f' {k}="{_xml.attr(r[k])}"'
                                    for k in ("reason", "count", "proto", "ports")
                                    if r[k] is not None)  # fmt: skip
                    out.write(f"<extrareasons{attrs}/>\n")
                out.write("</extraports>\n")
        else:
            got = listed.get(addr, {})
            for state in _FOLDED:
                folded = (h[state] or 0) - (got.get(state) or 0)
                if folded > 0:
                    out.write(f'<extraports state="{state}" count="{folded}"></extraports>\n')
        if first == pos:  # the usual case: hosts and ports share one order
            mine: Iterator[tuple[Any, ...]] = (next(rows) for _ in range(end - first))
            pos = end
        else:
            mine = _rows(ports.slice(first, end - first))
        if port_scripts:
            out.write("".join(_port_xml(r, port_scripts.get((addr, r[0], r[1]))) for r in mine))
        else:
            out.write("".join(_port_xml(r, None) for r in mine))
        out.write("</ports>\n")
        _host_tail(out, h, inventory, sweep)


def _write_runstats(out: TextIO, started: datetime, ended: datetime | None, hosts: pa.Table,
                    run: dict[str, Any] | None) -> None:  # fmt: skip
    end = ended or datetime.now(UTC)
    when = int(end.timestamp())
    timestr = _timestr(when)
    elapsed = f"{max(0.0, (end - started).total_seconds()):.2f}"
    states = pc.cast(hosts["state"], pa.string())
    up = int(pc.sum(pc.equal(states, cv.scalar_str("up"))).as_py() or 0)  # not "up": a str
    down = int(pc.sum(pc.equal(states, cv.scalar_str("down"))).as_py() or 0)  # imports pandas
    total = hosts.num_rows
    summary = (f"Nmap done at {timestr}; {total} IP address{'' if total == 1 else 'es'} "
               f"({up} host{'' if up == 1 else 's'} up) scanned in {elapsed} seconds")  # fmt: skip
    finished = {"time": when, "timestr": timestr, "summary": summary, "elapsed": elapsed,
                "exit": "success", "errormsg": None}  # fmt: skip
    counts = {"up": up, "down": down, "total": total}
    if run:  # an import: its own words and counts (nmap counts hosts it did not list)
        for key in ("timestr", "summary", "exit", "errormsg"):
            finished[key] = run.get(key)
        finished["elapsed"] = run.get("elapsed") or elapsed  # the DTD requires it
        for key in counts:
            if run.get(f"hosts_{key}") is not None:
                counts[key] = run[f"hosts_{key}"]
    attrs = "".join(f' {k}="{_xml.attr(v)}"' for k, v in finished.items() if v is not None)
    out.write(f'<runstats><finished{attrs}/><hosts up="{counts["up"]}" down="{counts["down"]}" '
              f'total="{counts["total"]}"/>\n</runstats>\n')  # fmt: skip
