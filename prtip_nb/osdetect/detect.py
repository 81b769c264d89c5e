"""One host's OS detection result from its replies: fingerprint, matches, rows (pure).

What nmap reports, and so what we report (nmap 7.9x, checked against its XML on our labs):

- Perfect matches (100 %): all of them, as ``<osmatch>``; "OS details" in the text.
- Otherwise the guesses: the best match and the next ones within 10 points of it, ten at
  most. nmap writes them to XML either way; its text shows them as "Aggressive OS
  guesses" with ``--osscan-guess`` or when the fingerprint is unreliable, and says "No
  exact OS matches" otherwise. ``guess=False`` here keeps them in the ``os`` table too
  (as nmap's XML does); the CLI prints them only with ``--osscan-guess``.
- A fingerprint is reliable (nmap's "good" fingerprint) when the scan found an open and a
  closed TCP port; nmap warns otherwise, and so does ``HostOs.warning``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .fingerprint import Fingerprint, compute, format_lines, hop_distance, wrap
from .osdb import OsDb, OsMatch
from .probes import TTL, ProbeSet
from .replies import Reply

__all__ = ["GUESS_SPAN", "MAX_SHOWN", "HostOs", "OsPlan", "analyze", "os_rows", "plan_hosts",
           "shown_matches"]

MAX_SHOWN = 10
GUESS_SPAN = 0.10


@dataclass
class HostOs:
    host: str
    fingerprint: Fingerprint
    text: str  # unwrapped, SCAN line first
    matches: list[OsMatch]  # every entry >= 85 %, best first
    reliable: bool
    distance: int | None
    ports_used: list[dict[str, Any]] = field(default_factory=list)
    sequences: dict[str, Any] = field(default_factory=dict)

    @property
    def perfect(self) -> list[OsMatch]:
        return [m for m in self.matches if m.accuracy >= 1.0]

    @property
    def shown(self) -> list[OsMatch]:
        return shown_matches(self.matches)

    @property
    def best(self) -> OsMatch | None:
        return self.matches[0] if self.matches else None

    @property
    def warning(self) -> str | None:
        if self.reliable:
            return None
        return ("OS detection results may not be reliable because we could not find at "
                "least 1 open and 1 closed port")

    @property
    def wrapped(self) -> str:
        return wrap(self.text)


def shown_matches(matches: list[OsMatch]) -> list[OsMatch]:
    """nmap's report: every perfect match, else the best and those within 10 points (10)."""
    perfect = [m for m in matches if m.accuracy >= 1.0]
    if perfect:
        return perfect
    if not matches:
        return []
    top = matches[0].accuracy
    return [m for i, m in enumerate(matches[:MAX_SHOWN])
            if i == 0 or m.accuracy > top - GUESS_SPAN]


def analyze(host: str, probes: ProbeSet, replies: Mapping[str, Reply],
            sent: Mapping[str, float], db: OsDb, *, open_port: int | None,
            closed_port: int | None, closed_udp: int, on_link: bool, reliable: bool,
            version: str = "") -> HostOs:
    """Compute the fingerprint of one host's replies and match it against ``db``."""
    # T (initial TTL) needs the hop count the U1 reply tells; without it nmap gives TG,
    # even for a host on the link (whose distance it knows otherwise: DS=1, DC=D).
    hops = hop_distance(replies.get("U1"), TTL)
    distance = 1 if on_link else hops
    fp = compute(replies, probes, sent, hops)
    now = time.localtime()
    scan = {"V": version or "prtip_nb", "E": "4", "D": f"{now.tm_mon}/{now.tm_mday}",
            "OT": "" if open_port is None else str(open_port),
            "CT": "" if closed_port is None else str(closed_port), "CU": str(closed_udp),
            "PV": "Y" if _private(host) else "N"}
    if distance is not None:
        scan["DS"] = str(distance)
        scan["DC"] = "D" if on_link else "I"
    scan.update({"G": "Y" if reliable else "N", "TM": f"{int(time.time()):X}",
                 "P": "prtip_nb"})
    used = []
    if open_port is not None:
        used.append({"state": "open", "proto": "tcp", "port": open_port})
    if closed_port is not None:
        used.append({"state": "closed", "proto": "tcp", "port": closed_port})
    used.append({"state": "closed", "proto": "udp", "port": closed_udp})
    seqs = [replies[n] for n in ("SEQ1", "SEQ2", "SEQ3", "SEQ4", "SEQ5", "SEQ6")
            if n in replies]
    sequences = _sequences(fp.get("SEQ", {}), seqs)
    return HostOs(host, fp, format_lines(fp, scan), db.match(fp), reliable, distance,
                  used, sequences)


_IPID_NAMES = {"Z": "All zeros", "RD": "Randomized", "RI": "Random positive increments",
               "BI": "Broken little-endian incremental", "I": "Incremental"}
_TS_NAMES = {"U": "none returned (unsupported)", "0": "zero timestamp", "1": "2HZ",
             "7": "100HZ", "A": "1000HZ"}


def _difficulty(index: int) -> str:
    for bound, text in ((3, "Trivial joke"), (6, "Easy"), (11, "Medium"), (12, "Formidable"),
                        (16, "Worthy challenge")):
        if index < bound:
            return text
    return "Good luck!"


def _sequences(seq: Mapping[str, str], replies: list[Reply]) -> dict[str, Any]:
    """nmap's <tcpsequence>, <ipidsequence> and <tcptssequence> attributes."""
    out: dict[str, Any] = {}
    if "SP" in seq:
        index = int(seq["SP"], 16)
        out["tcpsequence"] = {"index": str(index), "difficulty": _difficulty(index),
                              "values": ",".join(f"{r.seq:X}" for r in replies)}
    if "TI" in seq:
        ti = seq["TI"]
        out["ipidsequence"] = {"class": _IPID_NAMES.get(ti, "Duplicated ipid"),
                               "values": ",".join(f"{r.ip_id:X}" for r in replies)}
    if "TS" in seq:
        out["tcptssequence"] = {"class": _TS_NAMES.get(seq["TS"], "other")}
    return out


def _private(host: str) -> bool:
    """nmap's isipprivate (PV in the SCAN line): 10/8, 172.16/12 and 192.168/16."""
    parts = host.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return False
    a, b = int(parts[0]), int(parts[1])
    return a == 10 or (a == 172 and 16 <= b <= 31) or (a == 192 and b == 168)


def os_rows(result: HostOs) -> list[dict[str, Any]]:
    """Rows of the ``os`` table (schema.OS without scan_id) for what nmap would report."""
    rows = []
    for m in result.shown:
        classes = [{"type": c.type, "vendor": c.vendor, "family": c.family,
                    "generation": c.generation, "accuracy": m.percent, "cpe": list(c.cpe)}
                   for c in m.classes]
        rows.append({"host": result.host, "name": m.name, "accuracy": m.percent,
                     "line": m.line, "classes": classes})
    return rows


@dataclass(frozen=True)
class OsPlan:
    """The ports OS detection will use on one host, and whether the result is reliable."""

    host: str
    open_port: int | None
    closed_port: int | None
    closed_udp: int
    reliable: bool


def plan_hosts(rows: list[tuple[str, str, int, str]], *, limit: bool = False,
               seed: int | None = None) -> list[OsPlan]:
    """Which hosts to fingerprint with which ports, from (host, proto, port, state) rows.

    As nmap: the lowest open TCP port; a closed TCP port found by the scan, else a random
    high port (the result is then flagged unreliable); a closed UDP port found, else a
    random one. ``limit`` (``--osscan-limit``) skips hosts without an open and a closed
    TCP port. Hosts with no open TCP port are still probed (closed-port probes, U1, IE)
    unless ``limit``."""
    import random

    rng = random.Random(seed)
    per: dict[str, dict[str, list[int]]] = {}
    for host, proto, port, state in rows:
        d = per.setdefault(host, {"otcp": [], "ctcp": [], "cudp": [], "seen": []})
        d["seen"].append(port)
        if proto == "tcp" and state == "open":
            d["otcp"].append(port)
        elif proto == "tcp" and state == "closed":
            d["ctcp"].append(port)
        elif proto == "udp" and state == "closed":
            d["cudp"].append(port)
    plans = []
    for host, d in per.items():
        reliable = bool(d["otcp"] and d["ctcp"])
        if limit and not reliable:
            continue
        seen = set(d["seen"])
        closed = min(d["ctcp"]) if d["ctcp"] else _unused(rng, seen)
        udp = min(d["cudp"]) if d["cudp"] else _unused(rng, seen)
        plans.append(OsPlan(host, min(d["otcp"]) if d["otcp"] else None, closed, udp,
                            reliable))
    return plans


def _unused(rng: Any, seen: set[int]) -> int:
    for _ in range(64):
        port = rng.randrange(30000, 65000)
        if port not in seen:
            return port
    return 65001
