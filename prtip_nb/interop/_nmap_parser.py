"""The nmap XML parser behind ``read_nmap_xml`` and masscan's ``-oX`` reader.

It streams the file in 1 MiB blocks through expat (``xml.parsers.expat``, the parser under
ElementTree) with a start-element callback only; ``ElementTree.iterparse``, which builds
and frees an Element per tag, took 4.1 s on a 1M-port file before doing any work. Each
``<ports>`` section is first offered to ``_nmap_fast`` (one regex, exact or declined);
what it declines goes through expat. Memory stays flat: one chunk of Python values
(``_rows.CHUNK`` rows, or one host's ports), then Arrow columns. The two paths fill
separate batches, so rows come out in file order only per path; ``normalize_ports`` sorts
them anyway, and a (host, proto, port) listed twice keeps its responsive state.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from prtip_nb.interop import _nmap_fast, _rows, _tls
from prtip_nb.interop._hostsxml import HostRecords

__all__ = ["NmapXmlParser"]

_READ_BYTES = 1 << 20
# (column, <service> attribute); "banner" is masscan's -oX, nmap has none.
_SERVICE_KEYS = (
    ("service", "name"), ("product", "product"), ("version", "version"),
    ("extrainfo", "extrainfo"), ("banner", "banner"),
)  # fmt: skip


class NmapXmlParser:
    """One pass over an nmap-style XML file. ``masscan=True`` reads masscan's -oX dialect:
    one ``<host>`` per port, whose ``endtime`` is when the port answered (-> first_seen)."""

    def __init__(self, *, masscan: bool = False) -> None:
        self.masscan = masscan
        self.run: dict[str, str] = {}
        self.scaninfo: list[dict[str, str]] = []
        self.finished: dict[str, str] = {}
        self.hosts = HostRecords()
        self.batches: list[pa.RecordBatch] = []
        self.scan_id = ""
        self._addr: str | None = None
        self._hostname: str | None = None
        self._time: int | None = None
        self._scripts_ok = False  # False outside <host> and inside <hostscript>
        self._capture: tuple[ET.TreeBuilder, list[int]] | None = None
        self._new_chunk()
        self._new_fast_chunk()
        p = expat.ParserCreate()
        p.StartElementHandler = self._start
        p.buffer_text = True
        self._parser = p

    def _new_chunk(self) -> None:
        self._ports: list[dict[str, str]] = []
        self._states: list[dict[str, str] | None] = []
        self._services: list[dict[str, str] | None] = []
        self._row_host: list[str | None] = []
        self._row_hostname: list[str | None] = []
        self._row_time: list[int | None] = []
        self._extra: dict[int, dict[str, Any]] = {}  # row in chunk -> tls_*/banner values

    def _new_fast_chunk(self) -> None:
        self._fast: list[tuple[str, ...]] = []
        self._fast_host: list[str | None] = []
        self._fast_hostname: list[str | None] = []

    # --- the callback: the most frequent tags first ------------------------------------

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if name == "port":
            self._ports.append(attrs)
            self._states.append(None)
            self._services.append(None)
            self._row_host.append(self._addr)
            self._row_hostname.append(self._hostname)
            if self.masscan:
                self._row_time.append(self._time)
        elif name == "state":
            self._states[-1] = attrs
        elif name == "service":
            self._services[-1] = attrs
        elif name == "script":
            self._script(attrs)
        elif name == "host":
            if len(self._ports) >= _rows.CHUNK:
                self._flush()
            self._addr = self._hostname = None
            self._scripts_ok = True
            end = attrs.get("endtime")
            self._time = int(end) * 1_000_000 if self.masscan and end else None
            self.hosts.begin()
        elif name == "status":
            self.hosts.status(attrs)
        elif name == "address":
            if attrs.get("addrtype", "ipv4") != "mac":
                self._addr = attrs["addr"]
                self.hosts.address(self._addr)
        elif name == "hostname":
            if self._hostname is None and attrs.get("name"):
                self._hostname = attrs["name"]
                self.hosts.hostname(self._hostname)
        elif name == "extraports":
            self.hosts.extraports(attrs.get("state", ""), int(attrs.get("count", 0)))
        elif name == "times":
            self.hosts.times(attrs)
        elif name in ("hostscript", "prescript", "postscript"):
            self._scripts_ok = False
        elif name == "hosthint":  # a preview of a host that a <host> repeats: not kept
            self.hosts.begin(hint=True)
        elif name == "nmaprun":
            self.run = attrs
            self.scan_id = self.scan_id or _scan_id(attrs)
        elif name == "scaninfo":
            self.scaninfo.append(attrs)
        elif name == "finished":
            self.finished = attrs

    def _script(self, attrs: dict[str, str]) -> None:
        if not (self._scripts_ok and self._ports):
            return
        if attrs.get("id") == "banner":
            self._extra.setdefault(len(self._ports) - 1, {})["banner"] = attrs.get("output")
        elif attrs.get("id") == "ssl-cert":
            # Hand this one element's subtree to a TreeBuilder; only here do end and text
            # callbacks run, so the port rows above pay nothing for them.
            builder = ET.TreeBuilder()
            builder.start("script", attrs)
            self._capture = (builder, [1])
            self._parser.StartElementHandler = self._capture_start
            self._parser.EndElementHandler = self._capture_end
            self._parser.CharacterDataHandler = builder.data

    def _capture_start(self, name: str, attrs: dict[str, str]) -> None:
        assert self._capture is not None
        self._capture[0].start(name, attrs)
        self._capture[1][0] += 1

    def _capture_end(self, name: str) -> None:
        assert self._capture is not None
        builder, depth = self._capture
        builder.end(name)
        depth[0] -= 1
        if depth[0]:
            return
        self._capture = None
        p = self._parser
        p.StartElementHandler, p.EndElementHandler, p.CharacterDataHandler = self._start, None, None
        values = _tls.columns_from_script(builder.close())
        self._extra.setdefault(len(self._ports) - 1, {}).update(values)

    # --- chunks -> Arrow ----------------------------------------------------------------

    def _flush(self) -> None:
        n = len(self._ports)
        if n == 0:
            return
        if None in self._row_host:
            raise ValueError("a <port> element before its host's <address>")
        try:
            states = [s["state"] for s in self._states]  # type: ignore[index]
        except TypeError:
            raise ValueError("a <port> element without a <state>") from None
        cols: dict[str, list[Any]] = {
            "host": self._row_host,
            "hostname": self._row_hostname,
            "proto": [a.get("protocol") for a in self._ports],
            "port": [a.get("portid") for a in self._ports],
            "state": states,
            "reason": [s.get("reason", "unknown") for s in self._states],  # type: ignore[union-attr]
            # reason_ttl="0" means nmap saw no TTL (connect scans): unknown, so null.
            "ttl": [_ttl(s.get("reason_ttl")) for s in self._states],  # type: ignore[union-attr]
        }
        if self.masscan:
            cols["first_seen"] = self._row_time
        svc = self._services
        for column, key in _SERVICE_KEYS:
            cols[column] = [v.get(key) if v else None for v in svc]
        for i, values in self._extra.items():
            for column, value in values.items():
                cols.setdefault(column, [None] * n)[i] = value
        self.batches.append(_rows.ports_batch(self.scan_id, cols, n))
        self._new_chunk()

    def _fast_flush(self) -> None:
        n = len(self._fast)
        if n:
            cols = {"host": self._fast_host, "hostname": self._fast_hostname}
            for name in _nmap_fast.FIELDS:
                cols[name] = _nmap_fast.column(self._fast, name)
            self.batches.append(_rows.ports_batch(self.scan_id, cols, n))
        self._new_fast_chunk()

    def _section(self, block: bytes, start: int, end: int) -> None:
        """The ``<ports>`` section ``block[start:end]`` (tags included): regex or expat."""
        got = None
        if self._addr is not None:
            try:
                got = _nmap_fast.read_section(block[start + 7 : end - 8].decode())
            except UnicodeDecodeError:
                pass  # expat will say where
        if got is None:
            self._parser.Parse(block[start:end], False)
            return
        self._parser.Parse(b"<ports></ports>", False)  # expat still checks the structure
        rows, extraports = got
        for state, count in extraports:
            self.hosts.extraports(state, count)
        self._fast += rows
        self._fast_host += [self._addr] * len(rows)
        self._fast_hostname += [self._hostname] * len(rows)
        if len(self._fast) >= _rows.CHUNK:
            self._fast_flush()

    def _feed(self, fh: Any) -> None:
        p = self._parser
        block = fh.read(_READ_BYTES)
        # The fast path reads UTF-8 text; nmap declares UTF-8, other encodings go to expat.
        fast = not self.masscan and _declares_utf8(block)
        pos, eof = 0, not block
        while not eof or pos < len(block):
            start = block.find(b"<ports>", pos) if fast else -1
            end = block.find(b"</ports>", start) + 8 if start >= 0 else 7
            if start >= 0 and end >= 8:
                p.Parse(block[pos:start], False)
                self._section(block, start, end)
                pos = end
                continue
            if eof:
                p.Parse(block[pos:], False)
                break
            # No whole section in the block: pass on what cannot start one, read more.
            cut = start if start >= 0 else max(pos, len(block) - 6)
            p.Parse(block[pos:cut], False)
            more = fh.read(_READ_BYTES)
            block, pos, eof = block[cut:] + more, 0, not more
        p.Parse(b"", True)

    def parse(self, path: str | os.PathLike[str]) -> NmapXmlParser:
        try:
            with open(path, "rb") as fh:
                self._feed(fh)
        except expat.ExpatError as exc:
            raise ValueError(f"{path} is not well-formed XML: {exc}") from None
        if not self.run:
            raise ValueError(f"{path} is not nmap XML (no <nmaprun> element)")
        self._flush()
        self._fast_flush()
        return self


def _declares_utf8(head: bytes) -> bool:
    decl = head[: head.find(b"?>")] if head.startswith(b"<?xml") else b""
    return b"encoding" not in decl or b'encoding="utf-8"' in decl.lower()


def _ttl(text: str | None) -> str | None:
    return None if text == "0" or not text else text


def epoch_time(epoch: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(epoch), UTC) if epoch and epoch.isdigit() else None


def _scan_id(run: dict[str, str]) -> str:
    """``nmap-<start, UTC>-<6 hex of args+start>``: the same file always imports to the same
    id (so a second import is refused, not duplicated), and two scans of one second differ."""
    start = epoch_time(run.get("start")) or datetime.fromtimestamp(0, UTC)
    digest = hashlib.sha1(f"{run.get('args')}|{run.get('start')}".encode()).hexdigest()[:6]
    return f"{run.get('scanner', 'nmap')}-{start:%Y%m%dT%H%M%SZ}-{digest}"
