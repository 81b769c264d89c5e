"""The hosts of an nmap-style XML file, collected while parsing, and their hosts table.

Per ``<host>`` the parser records its address, first hostname, status and srtt, and any
``<extraports>`` counts. The table joins that with the counts derived from the ports rows,
so a host's open/closed/filtered/other counts include the ports nmap folded away.
Everything else nmap says of a host (schema v2's inventory columns: every address and
hostname, times, uptime, distance, extraports with their real state and reasons, the OS
fingerprint) is kept per host in a dict, built only for what the file has.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prtip_nb.interop import _rows
from prtip_nb.interop._time import epoch_us
from prtip_nb.results import _arrow, _hosts, schema
from prtip_nb.results import _convert as cv

_COUNTED = ("open", "closed", "filtered")
_HOST_STATES = {"up": "up", "down": "down"}  # nmap's "unknown"/"skipped" -> unknown


class HostRecords:
    """Column lists, one entry per ``<host>`` element (``<hosthint>`` ones are dropped)."""

    def __init__(self) -> None:
        self.addr: list[str | None] = []
        self.name: list[str | None] = []
        self.state: list[str | None] = []
        self.reason: list[str | None] = []
        self.srtt: list[str | None] = []
        self.extra: dict[int, dict[str, int]] = {}
        self.more: list[dict[str, Any]] = []  # v2 columns per host
        self._i = -1

    def begin(self, attrs: dict[str, str] | None = None, *, hint: bool = False) -> None:
        if hint:
            self._i = -1  # the calls below then change nothing
            return
        for col in (self.addr, self.name, self.state, self.reason, self.srtt):
            col.append(None)
        more: dict[str, Any] = {}
        for key, column in (("starttime", "started"), ("endtime", "ended")):
            us = epoch_us(attrs.get(key)) if attrs else None
            if us is not None:
                more[column] = us
        if attrs and "timedout" in attrs:
            more["timedout"] = attrs["timedout"] == "true"
        if attrs and "comment" in attrs:
            more["comment"] = attrs["comment"]
        self.more.append(more)
        self._i = len(self.addr) - 1

    def set(self, column: str, value: Any) -> None:
        if self._i >= 0:
            self.more[self._i][column] = value

    def status(self, attrs: dict[str, str]) -> None:
        if self._i >= 0:
            self.state[self._i] = _HOST_STATES.get(attrs.get("state", ""), "unknown")
            self.reason[self._i] = attrs.get("reason") or None
            ttl = attrs.get("reason_ttl")
            # reason_ttl="0" is nmap's "none", as on ports.
            ok = ttl and ttl.isdigit() and 0 < int(ttl) < 256
            self.set("reason_ttl", int(ttl) if ttl and ok else None)

    def address(self, addr: str, addrtype: str = "ipv4", vendor: str | None = None) -> None:
        if self._i < 0:
            return
        self.more[self._i].setdefault("addresses", []).append(
            {"addr": addr, "addrtype": addrtype, "vendor": vendor}
        )
        if addrtype == "mac":
            self.set("mac", addr)
            self.set("mac_vendor", vendor)
        elif self.addr[self._i] is None:
            self.addr[self._i] = addr

    def fallback_address(self, addr: str) -> None:
        """A host with no IP ``<address>`` is named by its hostname (as nmap's tools do)."""
        if self._i >= 0 and self.addr[self._i] is None:
            self.addr[self._i] = addr

    def hostname(self, name: str | None, kind: str | None = None) -> None:
        if self._i >= 0:
            if self.name[self._i] is None and name:
                self.name[self._i] = name
            self.more[self._i].setdefault("hostnames", []).append({"name": name, "type": kind})

    def no_hostnames(self) -> None:
        """An empty ``<hostnames/>``: kept as an empty list (null means "none written")."""
        if self._i >= 0:
            self.more[self._i].setdefault("hostnames", [])

    def times(self, attrs: dict[str, str]) -> None:
        if self._i >= 0:
            self.srtt[self._i] = attrs.get("srtt")
            for key, column in (("srtt", "srtt_us"), ("rttvar", "rttvar_us"), ("to", "timeout_us")):
                value = attrs.get(key, "")
                self.set(column, int(value) if value.lstrip("-").isdigit() else None)

    def extraports(self, state: str, count: int) -> None:
        if self._i >= 0:
            extra = self.extra.setdefault(self._i, {})
            key = state if state in _COUNTED else "other"
            extra[key] = extra.get(key, 0) + count
            self.more[self._i].setdefault("extraports", []).append(
                {"state": state, "count": count, "reasons": []}
            )

    def ports_element(self) -> None:
        """A ``<ports>`` element: extraports becomes a list (empty if none follow), which
        tells the writer to write the element; null means the host had none."""
        if self._i >= 0:
            self.more[self._i].setdefault("extraports", [])

    def extrareasons(self, attrs: dict[str, str]) -> None:
        if self._i >= 0 and self.more[self._i].get("extraports"):
            count = attrs.get("count", "")
            self.more[self._i]["extraports"][-1]["reasons"].append(
                {"reason": attrs.get("reason"), "count": int(count) if count.isdigit() else None,
                 "proto": attrs.get("proto"), "ports": attrs.get("ports")}
            )  # fmt: skip

    def addresses(self, *, limit: int) -> list[str]:
        """The first ``limit`` distinct addresses, in file order."""
        seen: dict[str, None] = {}
        for a in self.addr:
            if a is not None and a not in seen:
                seen[a] = None
                if len(seen) >= limit:
                    break
        return list(seen)

    def table(self, ports: pa.Table, scan_id: str) -> pa.Table:
        """The hosts table: XML status where the file has one, counts from ``ports`` plus
        extraports; hosts with rows but no ``<host>`` record are derived from their rows."""
        derived = _hosts.derive_hosts(ports)
        first: dict[str, int] = {}
        for i, a in enumerate(self.addr):  # one record per address: the first one
            if a is not None and a not in first:
                first[a] = i
        keep = list(first.values())
        if not keep:
            return derived
        addr = cv.strings(list(first))
        pos = pc.index_in(addr, value_set=derived["host"].combine_chunks())
        got = derived.take(pos)  # null rows where the host has no ports rows

        def pick(col: list[Any]) -> pa.Array:
            return cv.strings([col[i] for i in keep])

        srtt_us = pc.cast(pick(self.srtt), pa.float32())
        xml_state = pick(self.state)
        cols: dict[str, Any] = {
            "scan_id": _arrow.constant_dict(scan_id, len(keep), _arrow.zeros(len(keep))),
            "host": addr,
            "hostname": pc.coalesce(pick(self.name), got["hostname"]),
            "family": _rows.families(addr),
            "state": pc.coalesce(xml_state, pc.cast(got["state"], pa.string())),
            # A <status> without a reason (nmap before 5) stays null: no invented reason.
            "reason": pc.if_else(
                pc.is_valid(xml_state),
                pick(self.reason),
                pc.coalesce(pc.cast(got["reason"], pa.string()), cv.scalar_str("no-response")),
            ),
            "rtt_ms": pc.coalesce(
                pc.divide(srtt_us, cv.numbers([1000.0], pa.float32())[0]), got["rtt_ms"]
            ),
        }
        extra = [self.extra.get(i, {}) for i in keep]
        for name in (*_COUNTED, "other"):
            listed = pc.fill_null(got[name], cv.numbers([0], pa.uint32())[0])
            cols[name] = pc.add(listed, cv.numbers([e.get(name, 0) for e in extra], pa.uint32()))
        more = [self.more[i] for i in keep]
        for field in schema.HOSTS:
            if field.name not in cols and any(field.name in m for m in more):
                cols[field.name] = cv.column([m.get(field.name) for m in more], field.type)
        hosts = schema.conform(pa.table(cols), "hosts")
        missing = derived.filter(pc.invert(pc.is_in(derived["host"], value_set=addr)))
        return _hosts.sort_hosts(pa.concat_tables([hosts, schema.conform(missing, "hosts")]))
