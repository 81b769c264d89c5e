"""The nmap XML parser behind ``read_nmap_xml`` and masscan's ``-oX`` reader.

It streams the file in 1 MiB blocks through expat (``xml.parsers.expat``, the parser under
ElementTree) with a start-element callback only; ``ElementTree.iterparse``, which builds
and frees an Element per tag, took 4.1 s on a 1M-port file before doing any work. Each
``<ports>`` section is first offered to ``_nmap_fast`` (one regex, exact or declined);
what it declines goes through expat. Memory stays flat: one chunk of Python values
(``_rows.CHUNK`` rows, or one host's ports), then Arrow columns. The two paths fill
separate batches, so rows come out in file order only per path; ``normalize_ports`` sorts
them anyway, and a (host, proto, port) listed twice keeps its responsive state.

Elements with children that matter (``<service>`` for its ``<cpe>``, ``<script>``, ``<os>``,
``<trace>``) are captured whole: for that element only, expat's end and text callbacks feed
an ElementTree builder, and ``_nmap_inventory`` turns the element into rows. Malformed input
raises ``NmapXmlError`` with the line, never a bare KeyError or IndexError.
"""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from prtip_nb.errors import FileFormatError
from prtip_nb.interop import _nmap_fast, _nmap_inventory, _rows, _tls
from prtip_nb.interop._hostsxml import HostRecords
from prtip_nb.interop._time import epoch_time, epoch_us

__all__ = ["NmapXmlError", "NmapXmlParser"]

_READ_BYTES = 1 << 20
_SLICE_CHARS = 1 << 22  # a <ports> section longer than this is read by regex in slices
# (column, <service> attribute); "banner" is masscan's -oX, nmap has none.
_SERVICE_KEYS = (
    ("service", "name"), ("product", "product"), ("version", "version"),
    ("extrainfo", "extrainfo"), ("banner", "banner"), ("tunnel", "tunnel"),
    ("method", "method"), ("conf", "conf"), ("ostype", "ostype"),
    ("devicetype", "devicetype"), ("servicefp", "servicefp"), ("service_hostname", "hostname"),
)  # fmt: skip
_MAX_DEPTH = 64  # nesting of a captured element (script tables): deeper is not nmap's


class NmapXmlError(FileFormatError):
    """A file that is not (valid) nmap XML; the message names the file and the line."""


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
        self.sha256 = hashlib.sha256()  # of the whole file, filled while parsing
        self.scan_row: dict[str, Any] = {}  # <nmaprun>, <verbose>, <runstats> facts
        self.scripts: list[dict[str, Any]] = []
        self.os: list[dict[str, Any]] = []
        self.trace: list[dict[str, Any]] = []
        self._addr: str | None = None
        self._hostname: str | None = None
        self._time: int | None = None
        self._phase: str | None = None  # where a <script> is: pre, host, port, post
        self._sequences: dict[str, dict[str, str]] = {}
        self._capture: tuple[ET.TreeBuilder, list[int], Any] | None = None
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
        self._extra: dict[int, dict[str, Any]] = {}  # row in chunk -> tls_*/banner/cpe values

    def _new_fast_chunk(self) -> None:
        self._fast: list[tuple[str, ...]] = []
        self._fast_host: list[str | None] = []
        self._fast_hostname: list[str | None] = []

    # --- the callback: the most frequent tags first ------------------------------------

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if name == "port":
            if self._addr is None:
                self._no_address()
            if not attrs.get("protocol") or not attrs.get("portid"):
                missing = "protocol" if not attrs.get("protocol") else "portid"
                raise self._error(f"<port> without a {missing} attribute (nmap always writes "
                                  "protocol and portid)")  # fmt: skip
            self._ports.append(attrs)
            self._states.append(None)
            self._services.append(None)
            self._row_host.append(self._addr)
            self._row_hostname.append(self._hostname)
            self._phase = "port"
            if self.masscan:
                self._row_time.append(self._time)
        elif name == "state":
            if self._states:
                self._states[-1] = attrs
        elif name == "service":
            if self._services:
                self._services[-1] = attrs
                self._begin_capture(name, attrs, self._service_done)
        elif name == "script":
            self._begin_capture(name, attrs, self._script_done)
        elif name == "host":
            if len(self._ports) >= _rows.CHUNK:
                self._flush()
            self._addr = self._hostname = None
            self._phase = None
            self._sequences = {}
            end = attrs.get("endtime")
            self._time = epoch_us(end) if self.masscan else None
            self.hosts.begin(attrs)
        elif name == "status":
            self.hosts.status(attrs)
        elif name == "address":
            if "addr" not in attrs:
                raise self._error("<address> without an addr attribute")
            kind = attrs.get("addrtype", "ipv4")
            if kind != "mac" and self._addr is None:
                self._addr = attrs["addr"]
            self.hosts.address(attrs["addr"], kind, attrs.get("vendor"))
        elif name == "hostname":
            if self._hostname is None and attrs.get("name"):
                self._hostname = attrs["name"]
            self.hosts.hostname(attrs.get("name"), attrs.get("type"))
        elif name == "hostnames":
            self.hosts.no_hostnames()
        elif name == "extraports":
            count = attrs.get("count", "0")
            if not count.isdigit():
                raise self._error(f"<extraports count={count!r}>: the count is not a number")
            self.hosts.extraports(attrs.get("state", ""), int(count))
        elif name == "ports":
            self.hosts.ports_element()
        elif name == "extrareasons":
            self.hosts.extrareasons(attrs)
        elif name == "times":
            self.hosts.times(attrs)
        elif name in _HOST_VALUES:
            column, key, cast = _HOST_VALUES[name]
            self.hosts.set(column, cast(attrs.get(key)))
            if name == "uptime":
                self.hosts.set("lastboot", attrs.get("lastboot"))
        elif name in _SEQUENCES:
            self._sequences[name] = attrs
            self.hosts.set("sequences", json.dumps(self._sequences))
        elif name in ("hostscript", "prescript", "postscript"):
            self._phase = {"hostscript": "host", "prescript": "pre", "postscript": "post"}[name]
        elif name == "os":
            self._begin_capture(name, attrs, self._os_done)
        elif name == "trace":
            self._begin_capture(name, attrs, self._trace_done)
        elif name == "hosthint":  # a preview of a host that a <host> repeats: not kept
            self.hosts.begin(hint=True)
        elif name == "nmaprun":
            self.run = attrs
            self.scan_id = self.scan_id or legacy_scan_id(attrs)  # until the hash is known
        elif name == "scaninfo":
            self.scaninfo.append(attrs)
        elif name in ("verbose", "debugging"):
            self.scan_row[name] = _number(attrs.get("level"))
        elif name == "finished":
            self.finished = attrs
        elif name == "hosts" and self.finished:  # <runstats><hosts up down total>
            for key in ("up", "down", "total"):
                self.scan_row[f"hosts_{key}"] = _number(attrs.get(key))

    def _error(self, what: str) -> NmapXmlError:
        return NmapXmlError(f"line {self._parser.CurrentLineNumber}: {what}")

    def _no_address(self) -> None:
        """A host without an IP ``<address>``: named by its first hostname, as nmap's own
        tools name it; with neither, its ports cannot be told apart from another's."""
        if self._hostname is None:
            raise self._error("a <host> with ports but neither an <address> nor a <hostname>")
        self._addr = self._hostname
        self.hosts.fallback_address(self._hostname)

    # --- captured elements ------------------------------------------------------------

    def _begin_capture(self, name: str, attrs: dict[str, str], done: Any) -> None:
        # Hand this one element's subtree to a TreeBuilder; only here do end and text
        # callbacks run, so the port rows around it pay nothing for them.
        builder = ET.TreeBuilder()
        builder.start(name, attrs)
        self._capture = (builder, [1], done)
        p = self._parser
        p.StartElementHandler = self._capture_start
        p.EndElementHandler = self._capture_end
        p.CharacterDataHandler = builder.data

    def _capture_start(self, name: str, attrs: dict[str, str]) -> None:
        assert self._capture is not None
        self._capture[0].start(name, attrs)
        self._capture[1][0] += 1
        if self._capture[1][0] > _MAX_DEPTH:
            raise self._error(f"<{name}> nested more than {_MAX_DEPTH} deep")

    def _capture_end(self, name: str) -> None:
        assert self._capture is not None
        builder, depth, done = self._capture
        builder.end(name)
        depth[0] -= 1
        if depth[0]:
            return
        self._capture = None
        p = self._parser
        p.StartElementHandler, p.EndElementHandler, p.CharacterDataHandler = self._start, None, None
        done(builder.close())

    def _service_done(self, elem: ET.Element) -> None:
        cpes = [c.text or "" for c in elem.iter("cpe")]
        if cpes:
            self._extra.setdefault(len(self._ports) - 1, {})["cpe"] = cpes

    def _script_done(self, elem: ET.Element) -> None:
        phase = self._phase
        if phase is None:
            raise self._error("<script> outside a port, <hostscript>, <prescript> or <postscript>")
        row = _nmap_inventory.script_row(elem)
        row["phase"] = phase
        if phase in ("host", "port"):
            row["host"] = self._addr
        if phase == "port":
            port = self._ports[-1]
            row["proto"], row["port"] = port.get("protocol"), int(port["portid"])
            i = len(self._ports) - 1
            # A file written from a masscan import (version="masscan") has masscan's banner
            # types as script ids: its first one is the port's banner, as on import.
            from_masscan = self.run.get("version") == "masscan"
            if row["id"] == "banner" or (from_masscan and "banner" not in self._extra.get(i, {})):
                self._extra.setdefault(i, {})["banner"] = row["output"]
            elif row["id"] == "ssl-cert":
                self._extra.setdefault(i, {}).update(_tls.columns_from_script(elem))
        self.scripts.append(row)

    def _os_done(self, elem: ET.Element) -> None:
        rows, host = _nmap_inventory.os_rows(elem)
        for row in rows:
            row["host"] = self._addr
        self.os += rows
        for column, value in host.items():
            self.hosts.set(column, value)

    def _trace_done(self, elem: ET.Element) -> None:
        rows = _nmap_inventory.trace_rows(elem)
        for row in rows:
            row["host"] = self._addr
        self.trace += rows

    # --- chunks -> Arrow ----------------------------------------------------------------

    def _flush(self) -> None:
        n = len(self._ports)
        if n == 0:
            return
        for i, st in enumerate(self._states):
            if st is None or not st.get("state"):
                raise NmapXmlError(f"port {self._label(i)} has no <state state=...>")
        states = [s["state"] for s in self._states]  # type: ignore[index]
        for i, a in enumerate(self._ports):
            port = a["portid"]
            if not port.isdigit() or int(port) > 65535:
                raise NmapXmlError(f"port {self._label(i)}: portid is not a number 0-65535")
        cols: dict[str, list[Any]] = {
            "host": self._row_host,
            "hostname": self._row_hostname,
            "proto": [a.get("protocol") for a in self._ports],
            "port": [a.get("portid") for a in self._ports],
            "state": states,
            # No reason (nmap before 5): null, not an invented word.
            "reason": [s.get("reason") or None for s in self._states],  # type: ignore[union-attr]
            # reason_ttl="0" means nmap saw no TTL (connect scans): unknown, so null.
            "ttl": [_ttl(s.get("reason_ttl")) for s in self._states],  # type: ignore[union-attr]
        }
        if self.masscan:
            cols["first_seen"] = self._row_time
        svc = self._services
        for column, key in _SERVICE_KEYS:
            # product="" stays "": the fast path declines such a section (see _nmap_fast).
            cols[column] = [v.get(key) if v else None for v in svc]
        if any(v is not None for v in cols["conf"]):  # nmap writes 0-10; other text is none
            cols["conf"] = [_uint8(v) for v in cols["conf"]]
        for i, values in self._extra.items():
            for column, value in values.items():
                cols.setdefault(column, [None] * n)[i] = value
        self.batches.append(_rows.ports_batch(self.scan_id, cols, n))
        self._new_chunk()

    def _label(self, i: int) -> str:
        a = self._ports[i]
        return f"{a.get('portid')!r}/{a.get('protocol')} of host {self._row_host[i]}"

    def _fast_flush(self) -> None:
        n = len(self._fast)
        if n:
            cols = {"host": self._fast_host, "hostname": self._fast_hostname}
            for name in _nmap_fast.FIELDS[:-2]:
                cols[name] = _nmap_fast.column(self._fast, name)
            cols.update(_nmap_fast.service_columns(self._fast))
            try:
                batch = _rows.ports_batch(self.scan_id, cols, n)
            except (pa.ArrowInvalid, OverflowError):  # digits, but too many of them
                bad = next((r for r in self._fast if int(r[1]) > 65535), None)
                if bad is not None:
                    raise NmapXmlError(f"port {bad[1]!r}/{bad[0]} of host "
                                       f"{self._fast_host[self._fast.index(bad)]}: portid is "
                                       "not a number 0-65535") from None  # fmt: skip
                # A reason_ttl over 255 is no TTL, as on the expat path (_ttl).
                cols["ttl"] = [_ttl(v) for v in cols["ttl"]]
                batch = _rows.ports_batch(self.scan_id, cols, n)
            self.batches.append(batch)
        self._new_fast_chunk()

    def _section(self, block: bytes | bytearray, start: int, end: int) -> None:
        """The ``<ports>`` section ``block[start:end]`` (tags included): regex or expat."""
        if self._addr is None and self._hostname is not None:
            self._no_address()
        text = None
        if self._addr is not None:
            try:  # decoded from a view: no bytes copy of a large section first
                text = str(memoryview(block)[start + 7 : end - 8], "utf-8")
            except UnicodeDecodeError:
                pass  # expat will say where
        if text is None or not self._fast_section(text):
            self._parser.Parse(block[start:end], False)
            return
        self._parser.Parse(b"<ports></ports>", False)  # expat still checks the structure

    def _fast_section(self, text: str) -> bool:
        """Read a section's text by regex, a slice of ``_SLICE_CHARS`` at a time, flushing
        rows every CHUNK: one host's 200k listed ports (nmap -dd) then cost a chunk of
        tuples, not all of them at once. False (and nothing kept) if the regex declines
        any slice: expat then reads the whole section."""
        big = len(text) > _SLICE_CHARS
        if big:
            self._fast_flush()  # a clean mark: what is flushed from here on is this section's
        mark, rows_mark = len(self.batches), len(self._fast)
        extraports: list[Any] = []
        pos = 0
        while pos < len(text):
            cut = text.find("</port>", pos + _SLICE_CHARS) if big else -1
            cut = len(text) if cut < 0 else cut + 7
            got = _nmap_fast.read_section(text[pos:cut])
            if got is None or (pos and got[1]):  # extraports come first, or not fast
                del self.batches[mark:]  # this section's flushed slices (only a big one has)
                for rows_so_far in (self._fast, self._fast_host, self._fast_hostname):
                    del rows_so_far[rows_mark:]  # its rows not flushed yet; earlier hosts' stay
                return False
            rows, extra = got
            extraports += extra
            self._fast += rows
            self._fast_host += [self._addr] * len(rows)
            self._fast_hostname += [self._hostname] * len(rows)
            if big:  # a slice of rows at a time: the tuples are what costs memory
                self._fast_flush()
            pos = cut
        for state, count, reasons in extraports:
            self.hosts.extraports(state, count)
            for attrs in reasons:
                self.hosts.extrareasons(attrs)
        if len(self._fast) >= _rows.CHUNK:
            self._fast_flush()
        return True

    def _read(self, fh: Any) -> bytes:
        block: bytes = fh.read(_READ_BYTES)
        self.sha256.update(block)  # hashed on the way: the file is read once
        return block

    def _feed(self, fh: Any) -> None:
        p = self._parser
        block: bytes | bytearray = self._read(fh)
        # The fast path reads UTF-8 text; nmap declares UTF-8, other encodings go to expat.
        fast = not self.masscan and _declares_utf8(bytes(block[:512]))
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
            more = self._read(fh)
            # A bytearray grows in place: a section longer than a read is not copied again
            # for every MiB that arrives (the bytes + bytes here held two copies at once).
            if isinstance(block, bytearray):
                del block[:cut]
                block += more
            else:
                block = bytearray(memoryview(block)[cut:]) + more
            pos, eof = 0, not more
        p.Parse(b"", True)

    def parse(self, path: str | os.PathLike[str]) -> NmapXmlParser:
        if os.path.getsize(path) == 0:
            raise NmapXmlError(f"{path} is empty: an nmap -oX file starts with <?xml or <nmaprun")
        try:
            with open(path, "rb") as fh:
                self._feed(fh)
        except expat.ExpatError as exc:
            raise NmapXmlError(f"{path} is not well-formed XML: {exc}") from None
        except NmapXmlError as exc:
            raise NmapXmlError(f"{path}: {exc}") from None
        except RecursionError:
            raise NmapXmlError(f"{path}: elements nested too deep to be nmap XML") from None
        except LookupError as exc:  # <?xml encoding="..."?> that Python does not know
            raise NmapXmlError(f"{path} declares an encoding Python cannot read: {exc}") from None
        if not self.run:
            raise NmapXmlError(f"{path} is not nmap XML (no <nmaprun> element)")
        try:
            self._flush()
            self._fast_flush()
        except NmapXmlError as exc:
            raise NmapXmlError(f"{path}: {exc}") from None
        return self


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _uint8(text: str | None) -> int | None:
    value = _number(text)
    return value if value is not None and value < 256 else None


# Host elements of one attribute: element -> (hosts column, attribute, conversion).
_HOST_VALUES = {
    "uptime": ("uptime_s", "seconds", _number),
    "distance": ("distance", "value", _uint8),
}
_SEQUENCES = ("tcpsequence", "ipidsequence", "tcptssequence")


def _declares_utf8(head: bytes) -> bool:
    decl = head[: head.find(b"?>")] if head.startswith(b"<?xml") else b""
    return b"encoding" not in decl or b'encoding="utf-8"' in decl.lower()


def _ttl(text: str | None) -> str | None:
    if not text or text == "0" or not text.isdigit() or int(text) > 255:
        return None  # none seen (connect scans write 0), or not a TTL at all
    return text




def content_scan_id(run: dict[str, str], sha256: str) -> str:
    """``<scanner>-<start, UTC>-<12 hex of the file's sha256>``: ids sort by start time, and
    two different files never share one (48 bits of content hash), while the same file
    always imports to the same id."""
    start = epoch_time(run.get("start")) or datetime.fromtimestamp(0, UTC)
    scanner = "".join(c for c in run.get("scanner", "nmap") if c.isalnum()) or "nmap"
    return f"{scanner}-{start:%Y%m%dT%H%M%SZ}-{sha256[:12]}"


def legacy_scan_id(run: dict[str, str]) -> str:
    """Schema 1's import id, ``nmap-<start, UTC>-<6 hex of args+start>``: two files of the
    same command line and second collided. Still the parser's provisional id (replaced by
    ``content_scan_id``), and how ``prtip-nb import`` recognises a file imported by an older
    prtip_nb."""
    start = epoch_time(run.get("start")) or datetime.fromtimestamp(0, UTC)
    digest = hashlib.sha1(f"{run.get('args')}|{run.get('start')}".encode()).hexdigest()[:6]
    return f"{run.get('scanner', 'nmap')}-{start:%Y%m%dT%H%M%SZ}-{digest}"
