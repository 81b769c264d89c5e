"""masscan output in: ``-oJ`` (JSON), ``-oD`` (NDJSON), ``-oL`` (list) and ``-oX`` (XML).

Never run masscan to make test data here: it picks the default-route interface and puts
frames on the wire. The samples in tests/data are written by hand from its source.

The format is told by content, not by file name: ``<`` starts XML, ``[`` or ``{`` JSON,
anything else the list format. masscan writes one record per line in all of them, so the
JSON and list readers stream line by line, whichever JSON dialect a masscan version wrote:
a trailing comma after the last record (masscan 1.0.x), a leading one (later), unquoted
keys, or the old closing ``{finished: 1}`` record. A file re-indented by another tool is
read whole instead.

masscan reports a port once with its status and again for each banner it grabbed. The
status records make the ports rows; a banner record makes its port "open" if nothing else
did. Every banner is a row of the ``scripts`` table (id = masscan's banner type: ``http``,
``title``, ``X509``, ``ssh``, ...; output = the banner), in file order; the first banner of a
port also fills its ``banner`` column, and ``service`` gets the service the banner type
belongs to (``http.server`` and ``title`` are ``http``; ``X509`` is TLS, not a service).
Records of other protocols (``icmp`` from --ping) have no place in the ports table and are
skipped. A malformed record is a FileFormatError naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.errors import FileFormatError
from prtip_nb.interop import _rows
from prtip_nb.interop._nmap_parser import NmapXmlParser
from prtip_nb.interop._time import MAX_EPOCH
from prtip_nb.results import ScanMeta, ScanResult, _arrow, _hosts, schema
from prtip_nb.results import _convert as cv

__all__ = ["detect_format", "read_masscan"]

_PROTOS = ("tcp", "udp", "sctp")
_REASONS = {"rst": "reset", "rst-ack": "reset"}  # masscan's TCP flag names -> nmap's words
# masscan's banner types that are not a service name of their own.
_SERVICE_OF = {"title": "http", "http.server": "http", "x509": None, "ssl": None,
               "x509san": None}  # fmt: skip
_UNQUOTED_KEY = re.compile(r"([{,]\s*)([A-Za-z_]\w*)\s*:")
_TRAILING_COMMA = re.compile(r",\s*([\]}])")


def detect_format(path: str | os.PathLike[str]) -> str:
    """"xml", "json" or "list", from the first non-blank bytes of the file.

    Raises FileFormatError for an empty file and for masscan's binary format (``-oB``).
    """
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip()
    if not head:
        raise FileFormatError(f"{path} is empty: nothing to import")
    if head.startswith(b"masscan/"):  # -oB's magic: "masscan/1.1" and a version
        raise FileFormatError(
            f"{path} is masscan's binary format (-oB), which is not supported: convert it "
            f"with `masscan --readscan {path} -oJ {Path(path).stem}.json` and import that"
        )
    if head.startswith(b"<"):
        return "xml"
    if head.startswith((b"[", b"{")):
        return "json"
    return "list"


class _Collector:
    """Status rows in chunks (``_rows``), banners keyed by port; first banner wins."""

    def __init__(self, scan_id: str) -> None:
        self.scan_id = scan_id
        self.batches: list[pa.RecordBatch] = []
        self.banners: dict[tuple[str, str, int], tuple[str | None, str | None]] = {}
        self.scripts: list[dict[str, Any]] = []  # every banner, in file order
        self.first: int | None = None  # record times seen, µs since the epoch
        self.last: int | None = None
        self._cols: dict[str, list[Any]] = {k: [] for k in
                                             ("host", "proto", "port", "state", "reason", "ttl",
                                              "first_seen")}  # fmt: skip

    def status(self, host: str, proto: str, port: int, state: str, reason: str | None,
               ttl: int | None, when: int | None) -> None:  # fmt: skip
        if proto not in _PROTOS:
            return
        if not reason or reason == "none":  # -oL has none: masscan's probes allow only these
            if proto == "tcp":
                reason = "syn-ack" if state == "open" else "reset"
            else:
                reason = "udp-response" if state == "open" else "port-unreach"
        c = self._cols
        c["host"].append(host)
        c["proto"].append(proto)
        c["port"].append(port)
        c["state"].append(state)
        c["reason"].append(_REASONS.get(reason, reason))
        c["ttl"].append(ttl or None)  # masscan writes 0 when it has none
        c["first_seen"].append(when)
        if when is not None:
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)
        if len(c["host"]) >= _rows.CHUNK:
            self.flush()

    def banner(self, host: str, proto: str, port: int, name: str | None, text: str | None,
               ttl: int | None, when: int | None) -> None:  # fmt: skip
        if proto not in _PROTOS:
            return
        kind = name or "banner"
        service = _SERVICE_OF.get(kind.lower(), kind.split(".")[0])
        self.banners.setdefault((host, proto, port), (service, text))
        self.scripts.append({"host": host, "proto": proto, "port": port, "phase": "port",
                             "id": kind, "output": text or ""})  # fmt: skip
        # A banner proves the port open; the status row, if any, comes first and wins dedup.
        self.status(host, proto, port, "open", None, ttl, when)

    def flush(self) -> None:
        n = len(self._cols["host"])
        if n:
            self.batches.append(_rows.ports_batch(self.scan_id, self._cols, n))
            self._cols = {k: [] for k in self._cols}

    def ports(self) -> pa.Table:
        self.flush()
        ports = _rows.ports_table(self.batches)
        if not self.banners:
            return ports
        keys = list(self.banners)
        services: dict[str, list[Any]] = {
            "host": [k[0] for k in keys], "proto": [k[1] for k in keys],
            "port": [k[2] for k in keys],
            "service": [self.banners[k][0] for k in keys],
            "banner": [self.banners[k][1] for k in keys],
        }  # fmt: skip
        return _arrow.merge_services(ports, cv.table(services, _arrow.SERVICES))


def _json_records(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """(where, record): where is "line N" (or "record N" in a re-indented file)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.strip().strip(",").strip()
            if line in ("", "[", "]"):
                continue
            try:
                record = json.loads(line)
            except RecursionError:
                raise FileFormatError(f"{path}:{number}: JSON nested too deep") from None
            except json.JSONDecodeError:
                try:  # masscan's oldest JSON: {finished: 1}, {ip: "…", ports: […]}
                    record = json.loads(_UNQUOTED_KEY.sub(r'\1"\2":', line))
                except (json.JSONDecodeError, RecursionError):
                    if number <= 2:  # not one record per line: re-indented, read it whole
                        yield from _json_whole(path)
                        return
                    raise FileFormatError(f"{path}:{number}: not a masscan JSON record") from None
            for r in record if isinstance(record, list) else [record]:
                yield f"line {number}", r


def _json_whole(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(_TRAILING_COMMA.sub(r"\1", text))
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path} is not masscan JSON: {exc}") from None
    except RecursionError:
        raise FileFormatError(f"{path} is not masscan JSON: nested too deep") from None
    for i, r in enumerate(data if isinstance(data, list) else [data], 1):
        yield f"record {i}", r


def _port(value: Any) -> int:
    port = int(value)  # ValueError/TypeError: the caller names the record
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is not in 0-65535")
    return port


def _ttl(value: Any) -> int | None:
    """masscan's ttl, or None when it has none (0) or it is not a TTL."""
    return value if isinstance(value, int) and 0 < value < 256 else None


def _read_json(path: str | os.PathLike[str], out: _Collector) -> None:
    for where, record in _json_records(path):
        try:
            _json_record(record, out)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise FileFormatError(f"{path} ({where}): not a masscan record: {what}") from None


def _json_record(record: Any, out: _Collector) -> None:
    if not isinstance(record, dict):
        raise TypeError(f"a {type(record).__name__}, not an object")
    if "ip" not in record:  # {"finished": 1} and other trailers
        return
    when = _us(record.get("timestamp"))
    ip = str(record["ip"])
    if "rec_type" in record:  # -oD: one flat record per status or banner
        data = record.get("data") or {}
        args = (ip, str(record.get("proto", "tcp")), _port(record["port"]))
        if record["rec_type"] == "banner":
            out.banner(*args, _text(data.get("service_name")), _text(data.get("banner")),
                       None, when)  # fmt: skip
        else:
            out.status(*args, str(data.get("status", "open")), _text(data.get("reason")),
                       _ttl(data.get("ttl")), when)  # fmt: skip
        return
    for p in record.get("ports") or ():
        args = (ip, str(p.get("proto", "tcp")), _port(p["port"]))
        if "service" in p:
            svc = p["service"] or {}
            out.banner(*args, _text(svc.get("name")), _text(svc.get("banner")),
                       _ttl(p.get("ttl")), when)  # fmt: skip
        else:
            out.status(*args, str(p.get("status", "open")), _text(p.get("reason")),
                       _ttl(p.get("ttl")), when)  # fmt: skip


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _read_list(path: str | os.PathLike[str], out: _Collector) -> None:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip() or raw.startswith("#"):
                continue
            # "open tcp 80 198.51.100.7 1390000000" / "banner tcp 80 <ip> <time> <name> <text>"
            f = raw.rstrip("\n").split(" ", 6)
            try:
                kind, proto, port, ip, when = f[0], f[1], _port(f[2]), f[3], _us(f[4])
            except (IndexError, ValueError):
                raise FileFormatError(f"{path}:{number}: not a masscan -oL line: {raw[:80]!r}"
                                      ) from None  # fmt: skip
            if kind == "banner":
                name = f[5] if len(f) > 5 else None
                out.banner(ip, proto, port, name, f[6] if len(f) > 6 else None, None, when)
            else:
                out.status(ip, proto, port, kind, None, None, when)


def _us(value: Any) -> int | None:
    try:
        us = int(value) * 1_000_000
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        return None
    return us if 0 <= us <= MAX_EPOCH * 1_000_000 else None  # a time datetime can hold


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _scan_id(sha256: str, started: datetime) -> str:
    """``masscan-<first record, UTC>-<12 hex of the file's sha256>``: the same file always
    gets the same id, two different files never share one."""
    return f"masscan-{started:%Y%m%dT%H%M%SZ}-{sha256[:12]}"


def _config(fmt: str, path: str | os.PathLike[str], ports: pa.Table) -> dict[str, Any]:
    numbers = sorted(pc.unique(ports["port"]).to_pylist())
    hosts = pc.unique(ports["host"]).to_pylist()
    return {
        "source": f"masscan-{fmt}", "file": str(path), "scanner": "masscan",
        "targets": hosts[:1024], "method": "syn",
        "ports": ",".join(map(str, numbers[:4096])) or None,
    }  # fmt: skip


def read_masscan(path: str | os.PathLike[str], *, scan_id: str | None = None) -> ScanResult:
    """masscan ``-oJ``/``-oD``/``-oL``/``-oX`` output as a ScanResult (format by content).

    ``scan_id`` defaults to ``masscan-<first record's time>-<hash of the file's head>``;
    started/ended are the first and last record times. Hosts are derived from the rows
    (masscan records no host status): "up" when any port answered.
    """
    fmt = detect_format(path)
    if fmt == "xml":
        parser = NmapXmlParser(masscan=True)
        parser.scan_id = scan_id or "masscan"
        parser.parse(path)
        table = pa.Table.from_batches(parser.batches, schema=schema.PORTS)
        at = table.schema.get_field_index("first_seen")  # µs, as the other readers give
        table = table.set_column(at, "first_seen", pc.cast(table["first_seen"], pa.int64()))
        out = _Collector(parser.scan_id)
        # Back through the collector, in file order: it merges banners as for JSON.
        for r in table.select(["host", "proto", "port", "state", "reason", "ttl", "first_seen",
                               "service", "banner"]).to_pylist():  # fmt: skip
            if r["service"] is not None or r["banner"] is not None:
                out.banner(r["host"], r["proto"], r["port"], r["service"], r["banner"],
                           r["ttl"], r["first_seen"])  # fmt: skip
            else:
                out.status(r["host"], r["proto"], r["port"], r["state"], r["reason"], r["ttl"],
                           r["first_seen"])  # fmt: skip
    else:
        out = _Collector(scan_id or "masscan")
        (_read_json if fmt == "json" else _read_list)(path, out)
    ports = out.ports()
    first, last = out.first or 0, out.last or out.first or 0
    started = datetime.fromtimestamp(first / 1e6, UTC)
    sha256 = file_sha256(path)
    meta = ScanMeta(
        scan_id=scan_id or _scan_id(sha256, started),
        config=_config(fmt, path, ports),
        started=started,
        ended=datetime.fromtimestamp(last / 1e6, UTC),
    )
    if meta.scan_id != out.scan_id:
        ports = _rows.with_scan_id(ports, meta.scan_id)
    # masscan records no command line: the scan row says where the data came from instead.
    scan: dict[str, list[Any]] = {
        "scan_id": [meta.scan_id], "source": [f"masscan-{fmt}"], "source_file": [str(path)],
        "source_sha256": [sha256], "scanner": ["masscan"], "started": [meta.started],
        "ended": [meta.ended],
    }  # fmt: skip
    tables = {"ports": ports, "hosts": _hosts.derive_hosts(ports),
              "scan": cv.table(scan, schema.SCAN)}  # fmt: skip
    if out.scripts:
        cols = {f.name: [r.get(f.name) for r in out.scripts] for f in schema.SCRIPTS}
        cols["scan_id"] = [meta.scan_id] * len(out.scripts)
        tables["scripts"] = cv.table(cols, schema.SCRIPTS)
    return ScanResult(tables, meta)
