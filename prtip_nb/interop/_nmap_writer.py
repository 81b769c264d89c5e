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

Imports pyarrow and the stdlib only: ``prtip-nb scan -oX`` does not pay for pandas.
"""

from __future__ import annotations

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
from prtip_nb.interop import _tls, _xml
from prtip_nb.results import _convert as cv
from prtip_nb.results import _hosts

if TYPE_CHECKING:
    from prtip_nb.results import ScanResult

_SCAN_TYPES = {"connect", "syn", "ack", "null", "xmas", "window", "maimon", "fin", "udp"}
_ROW_COLUMNS = (
    "proto", "port", "state", "reason", "ttl", "service", "product", "version", "extrainfo",
    "banner", "tls_subject", "tls_issuer", "tls_san", "tls_not_after",
)  # fmt: skip
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


def _write(result: ScanResult, out: TextIO) -> None:
    meta = result.meta
    assert meta is not None
    cfg = meta.config
    ports, hosts = result.tables["ports"], result.tables["hosts"]
    imported = cfg.get("source") == "nmap-xml"
    start = int(meta.started.timestamp())
    startstr = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(start))
    args = cfg.get("args") if imported else command_line(cfg)
    sweep = is_discovery(cfg)
    version = cfg.get("version") if imported else f"prtip_nb {meta.tool_version}"
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n')
    out.write(f"<!-- written by prtip_nb {_xml.text(meta.tool_version)} from scan "
              f"{_xml.text(meta.scan_id).replace('--', '- -')} -->\n")  # fmt: skip
    out.write(f'<nmaprun scanner="nmap" args="{_xml.attr(args or "")}" start="{start}" '
              f'startstr="{startstr}" version="{_xml.attr(version or "")}" '
              'xmloutputversion="1.05">\n')  # fmt: skip
    # An imported file's scaninfo as it was (none at all in an nmap -sn file); a ping
    # sweep of ours has none either.
    if imported:
        infos = cfg.get("scaninfo") or []
    else:
        infos = [] if sweep else _scaninfo(cfg, ports)
    for info in infos:
        out.write("<scaninfo" + "".join(f' {k}="{_xml.attr(v)}"' for k, v in info.items()) + "/>\n")
    # A sweep lists its down hosts too, which nmap -sn does at verbosity 1 (-v).
    out.write(f'<verbose level="{int(sweep)}"/>\n<debugging level="0"/>\n')
    derived = _hosts.derive_hosts(ports)
    missing = derived.filter(pc.invert(pc.is_in(derived["host"], value_set=hosts["host"])))
    all_hosts = pa.concat_tables([hosts, missing]) if missing.num_rows else hosts
    _write_hosts(out, all_hosts, derived, ports, sweep=sweep)
    _write_runstats(out, meta.started, meta.ended, all_hosts)
    out.write("</nmaprun>\n")


def is_discovery(cfg: dict[str, Any]) -> bool:
    """True for a ping sweep's config: ours (``extra.discovery``) or an imported ``-sn``."""
    if cfg.get("source") == "nmap-xml":
        return not cfg.get("scaninfo") and any(
            w in ("-sn", "-sP") for w in str(cfg.get("args") or "").split())
    return (cfg.get("extra") or {}).get("discovery") == "-sn"


def _asked(cfg: dict[str, Any]) -> Any:
    """The PortSet a prtip_nb scan asked for (unprefixed ports are UDP in a -sU scan)."""
    from prtip_nb.targets import parse_ports

    return parse_ports(cfg.get("ports"), top_ports=cfg.get("top_ports"),
                       default_proto="udp" if cfg.get("method") == "udp" else "tcp")


def command_line(cfg: dict[str, Any]) -> str:
    """The ``prtip-nb scan`` command line that a prtip_nb config stands for."""
    from prtip_nb.errors import PortSpecError

    words = ["prtip-nb", "scan"]
    if is_discovery(cfg):
        words.append("-sn")
    else:
        try:
            udp = bool(_asked(cfg).udp)
        except (PortSpecError, TypeError, ValueError):
            udp = False
        method = cfg.get("method")
        if method != "udp":
            words.append("-sS" if method == "syn" else "-sT")
        if udp or method == "udp":
            words.append("-sU")
        if cfg.get("ports"):
            words += ["-p", str(cfg["ports"])]
        if cfg.get("top_ports"):
            words += ["--top-ports", str(cfg["top_ports"])]
    return " ".join(words + [str(t) for t in cfg.get("targets") or ()])


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
        text = [_values(part[name]) for name in _ROW_COLUMNS[:10]]
        tls = [part[name].to_pylist() for name in _ROW_COLUMNS[10:]]
        yield from zip(*text, *tls, strict=True)


def _host_ranges(ports: pa.Table) -> dict[str, tuple[int, int]]:
    """host -> (first row, end row) in ``ports``, whose rows are grouped by host."""
    if ports.num_rows == 0:
        return {}
    _, starts = _hosts._runs([ports["host"].combine_chunks()])
    first = starts.to_pylist()
    ends = first[1:] + [ports.num_rows]
    names = ports["host"].take(starts).to_pylist()
    return {h: (a, b) for h, a, b in zip(names, first, ends, strict=True)}


def _port_xml(r: tuple[Any, ...]) -> str:
    """One ``<port>`` element; the text fields of ``r`` are already escaped (``_values``)."""
    proto, port, state, reason, ttl, service, product, version, extra, banner, *tls = r
    xml = (f'<port protocol="{proto}" portid="{port}"><state state="{state}" '
           f'reason="{reason}" reason_ttl="{ttl or 0}"/>')  # fmt: skip
    if product or version or extra:
        xml += f'<service name="{service or "unknown"}"'
        for key, value in (("product", product), ("version", version), ("extrainfo", extra)):
            if value:
                xml += f' {key}="{value}"'
        xml += ' method="probed" conf="10"/>'
    elif service:
        xml += f'<service name="{service}" method="table" conf="3"/>'
    # One script at most: ndiff 7.93 (Debian's, Python 3) crashes loading a port with two
    # (ScriptResult.sort(), ndiff.py:1423). TLS facts win over a banner when a port has both.
    if any(tls):
        xml += _tls.script_xml(dict(zip(_ROW_COLUMNS[10:], tls, strict=True)))
    elif banner:
        xml += f'<script id="banner" output="{banner}"/>'
    return xml + "</port>\n"


def _write_hosts(out: TextIO, hosts: pa.Table, derived: pa.Table, ports: pa.Table, *,
                 sweep: bool = False) -> None:
    # Counts of listed rows per host: what the hosts table counts beyond them was folded.
    listed = {h["host"]: h for h in derived.select(["host", *_FOLDED]).to_pylist()}
    ranges = _host_ranges(ports)
    rows, pos = _rows(ports), 0
    for h in hosts.to_pylist():
        addr = h["host"]
        family = "ipv6" if h["family"] == 6 else "ipv4"
        out.write(
            f'<host><status state="{_xml.attr(h["state"])}" '
            f'reason="{_xml.attr(h["reason"])}" reason_ttl="0"/>\n'
            f'<address addr="{_xml.attr(addr)}" addrtype="{family}"/>\n<hostnames>\n'
        )
        if h["hostname"]:
            out.write(f'<hostname name="{_xml.attr(h["hostname"])}" type="user"/>\n')
        out.write("</hostnames>\n")
        if sweep:  # nmap -sn: status, address, names and times; no <ports>
            rtt = h.get("rtt_ms")
            if rtt is not None:
                srtt = max(1, round(rtt * 1000))  # nmap's unit: microseconds
                out.write(f'<times srtt="{srtt}" rttvar="{srtt}" to="{max(100000, 4 * srtt)}"'
                          '/>\n')
            out.write("</host>\n")
            continue
        out.write("<ports>")
        got = listed.get(addr, {})
        for state in _FOLDED:
            folded = (h[state] or 0) - (got.get(state) or 0)
            if folded > 0:
                out.write(f'<extraports state="{state}" count="{folded}"></extraports>\n')
        first, end = ranges.get(addr, (pos, pos))
        if first == pos:  # the usual case: hosts and ports share one order
            mine: Iterator[tuple[Any, ...]] = (next(rows) for _ in range(end - first))
            pos = end
        else:
            mine = _rows(ports.slice(first, end - first))
        out.write("".join(map(_port_xml, mine)))
        out.write("</ports>\n</host>\n")


def _write_runstats(
    out: TextIO, started: datetime, ended: datetime | None, hosts: pa.Table
) -> None:
    end = ended or datetime.now(UTC)
    when = int(end.timestamp())
    timestr = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(when))
    elapsed = f"{max(0.0, (end - started).total_seconds()):.2f}"
    states = pc.cast(hosts["state"], pa.string())
    up = int(pc.sum(pc.equal(states, cv.scalar_str("up"))).as_py() or 0)  # not "up": a str
    down = int(pc.sum(pc.equal(states, cv.scalar_str("down"))).as_py() or 0)  # imports pandas
    total = hosts.num_rows
    summary = (f"Nmap done at {timestr}; {total} IP address{'' if total == 1 else 'es'} "
               f"({up} host{'' if up == 1 else 's'} up) scanned in {elapsed} seconds")  # fmt: skip
    out.write(f'<runstats><finished time="{when}" timestr="{timestr}" summary="{summary}" '
              f'elapsed="{elapsed}" exit="success"/><hosts up="{up}" down="{down}" '
              f'total="{total}"/>\n</runstats>\n')  # fmt: skip
