"""nmap XML (``-oX``) in, streaming; the writer lives in ``_nmap_writer``.

Reading streams (``_nmap_parser``): a 1 GB file never sits in memory, and a 1M-port file
imports at about 260k rows/s (``python -m benchmarks import-nmap-xml``).

What maps where (one ports row per ``<port>`` element; results schema 2):

- ``<port protocol portid>`` -> proto, port; ``<state state reason reason_ttl>`` -> state,
  reason (null when absent, as in nmap 4), ttl (reason_ttl="0", nmap's "none", is null).
- ``<service>`` -> service, product, version, extrainfo, tunnel, method, conf, ostype,
  devicetype, servicefp, service_hostname; its ``<cpe>`` children -> cpe (a list).
  ``product=""`` stays "" (absent is null) on both parser paths. Not kept: rpc attributes
  (proto, rpcnum, lowver, highver), ``<owner>``, ``reason_ip``.
- every ``<script>`` -> a ``scripts`` row (phase pre, host, port or post; output; the
  elem/table tree as ``data`` JSON and flattened ``elements``). ``ssl-cert`` also fills the
  tls_* columns (``_tls``) and ``banner`` the banner column, as before.
- ``<address>`` (all of them, MAC and vendor too) -> hosts.addresses/mac/mac_vendor; the
  first IP address is the host (a host with none is named by its first hostname); every
  ``<hostname>`` -> hosts.hostnames (the first also -> hostname).
- ``<extraports>`` (with their ``<extrareasons>``) -> hosts.extraports, state as written;
  their counts are also added to the hosts' open/closed/filtered/other.
- ``<os>`` -> ``os`` rows (one per osmatch, classes with CPEs) and hosts.os_portused/
  os_fingerprint; ``<uptime>``, ``<distance>``, the sequence elements, ``<times>`` and the
  host's starttime/endtime/timedout/comment -> hosts columns; ``<trace>`` -> ``trace`` rows.
- ``<nmaprun>``, ``<scaninfo>``, ``<verbose>``, ``<debugging>``, ``<runstats>`` -> the ``scan``
  row, with the file's name and sha256. Not kept: progress chatter (``<taskbegin>``,
  ``<taskend>``, ``<taskprogress>``), ``<hosthint>`` previews, ``<output>``, ``<target>``.
"""

from __future__ import annotations

import os
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.interop import _rows
from prtip_nb.interop._nmap_parser import NmapXmlParser, content_scan_id, epoch_time
from prtip_nb.interop._nmap_writer import write_nmap_xml
from prtip_nb.results import ScanMeta, ScanResult, schema
from prtip_nb.results import _convert as cv

__all__ = ["read_nmap_xml", "write_nmap_xml"]

# nmap options that take a separate value: what is left of the command line are targets.
_VALUED = frozenset(
    "-iL -iR -p -e -S -D -g -b -sI -oN -oX -oG -oA -oS -oM --exclude --excludefile "
    "--exclude-ports --top-ports --port-ratio --script --script-args --script-args-file "
    "--script-timeout --version-intensity --min-hostgroup --max-hostgroup --min-parallelism "
    "--max-parallelism --min-rtt-timeout --max-rtt-timeout --initial-rtt-timeout --max-retries "
    "--host-timeout --scan-delay --max-scan-delay --min-rate --max-rate --mtu --source-port "
    "--proxies --data --data-string --data-length --ip-options --ttl --spoof-mac --stylesheet "
    "--datadir --servicedb --versiondb --resume --scanflags --max-os-tries --dns-servers".split()
)


def _meta(parser: NmapXmlParser, path: str | os.PathLike[str]) -> ScanMeta:
    run, ended = parser.run, parser.finished.get("time")
    started = epoch_time(run.get("start")) or epoch_time(ended) or datetime.fromtimestamp(0, UTC)
    protos = {s.get("protocol", "tcp") for s in parser.scaninfo}
    ports = ",".join(
        (f"{s.get('protocol', 'tcp')[0].upper()}:" if len(protos) > 1 else "")
        + s.get("services", "")
        for s in parser.scaninfo
    )
    config = {
        "source": "masscan-xml" if parser.masscan else "nmap-xml",
        "file": str(path),
        "scanner": run.get("scanner", "nmap"),
        "version": run.get("version"),
        "args": run.get("args"),
        "targets": _targets(run.get("args")) or parser.hosts.addresses(limit=1024),
        "ports": ports or None,
        "method": parser.scaninfo[0].get("type") if parser.scaninfo else None,
        "scaninfo": parser.scaninfo,
    }
    return ScanMeta(
        scan_id=parser.scan_id, config=config, started=started, ended=epoch_time(ended)
    )


def _targets(args: str | None) -> list[str]:
    """The target specs of an nmap command line (its words that are not options)."""
    try:
        words = shlex.split(args or "")[1:]
    except ValueError:
        return []
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w.startswith("-"):
            skip = w in _VALUED
        else:
            out.append(w)
    return out


def _scan_row(parser: NmapXmlParser, meta: ScanMeta, path: str | os.PathLike[str],
              sha256: str | None) -> dict[str, list[Any]]:  # fmt: skip
    run, fin = parser.run, parser.finished
    row: dict[str, Any] = {
        "scan_id": meta.scan_id, "source": meta.config["source"], "source_file": str(path),
        "source_sha256": sha256, "scanner": run.get("scanner"), "version": run.get("version"),
        "args": run.get("args"), "started": meta.started if run.get("start") else None,
        "ended": meta.ended, "startstr": run.get("startstr"),
        "xmloutputversion": run.get("xmloutputversion"),
        "scaninfo": [{**s, "numservices": _int(s.get("numservices"))} for s in parser.scaninfo],
        "timestr": fin.get("timestr"), "elapsed": fin.get("elapsed"),
        "summary": fin.get("summary"), "exit": fin.get("exit"), "errormsg": fin.get("errormsg"),
        **parser.scan_row,
    }  # fmt: skip
    return {k: [v] for k, v in row.items()}


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def inventory_tables(parser: NmapXmlParser, scan_id: str) -> dict[str, pa.Table]:
    """The scripts, os and trace tables of a parsed file (empty ones left out)."""
    out = {}
    for name, rows in (("scripts", parser.scripts), ("os", parser.os), ("trace", parser.trace)):
        if rows:
            fields = schema.TABLES[name]
            cols = {f.name: [r.get(f.name) for r in rows] for f in fields if f.name != "scan_id"}
            cols["scan_id"] = [scan_id] * len(rows)
            out[name] = cv.table(cols, fields)
    return out


def read_nmap_xml(path: str | os.PathLike[str], *, scan_id: str | None = None) -> ScanResult:
    """An nmap ``-oX`` file as a ScanResult (streamed: memory does not grow with the file).

    ``scan_id`` defaults to ``nmap-<start time>-<hash>``, the same for the same file. The
    meta's config holds ``source="nmap-xml"``, nmap's ``args``, ``targets``, ``ports``
    (scaninfo's services), ``method`` (scaninfo's type) and ``version``.
    See the module docstring for which XML goes where.
    """
    parser = NmapXmlParser()
    # The content hash makes the id: two files never share one, the same file always
    # gets the same one (so a second import is recognised), whatever their args and times.
    parser.scan_id = scan_id or ""
    parser.parse(path)
    sha256 = parser.sha256.hexdigest()
    if not scan_id:
        parser.scan_id = content_scan_id(parser.run, sha256)
    meta = _meta(parser, Path(path))
    ports = _rows.ports_table(parser.batches)
    if ports.num_rows and pc.any(pc.not_equal(pc.cast(ports["scan_id"], pa.string()),
                                               cv.scalar_str(meta.scan_id))).as_py():  # fmt: skip
        ports = _rows.with_scan_id(ports, meta.scan_id)
    tables = {
        "ports": ports,
        "hosts": parser.hosts.table(ports, meta.scan_id),
        "scan": cv.table(_scan_row(parser, meta, path, sha256), schema.SCAN),
        **inventory_tables(parser, meta.scan_id),
    }
    return ScanResult(tables, meta)
