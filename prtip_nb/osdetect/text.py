"""nmap's text for an OS detection result, and the CLI's -O flags (pure).

``host_lines`` writes what nmap prints under a host after its ports: "Device type",
"Running", "OS CPE" and "OS details" for perfect matches; "Aggressive OS guesses" (with
``--osscan-guess``, or when the fingerprint is unreliable) and "No exact OS matches"
otherwise, then the fingerprint; "Network Distance" and the sequence lines.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["add_arguments", "host_lines", "options"]

SUBMIT = ("No exact OS matches for host (If you know what OS is running on it, see "
          "https://nmap.org/submit/ ).")
UNRELIABLE = ("Warning: OSScan results may be unreliable because we could not find at least "
              "1 open and 1 closed port")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """-O, --osscan-limit, --osscan-guess (and --os-db) on the scan command."""
    parser.add_argument("-O", dest="os", action="store_true",
                        help="OS detection after the port scan (IPv4, root; matches the "
                             "installed nmap's nmap-os-db)")
    parser.add_argument("--osscan-limit", action="store_true",
                        help="-O only on hosts with an open and a closed TCP port")
    parser.add_argument("--osscan-guess", "--fuzzy", dest="osscan_guess", action="store_true",
                        help="-O: print the closest guesses when no match is perfect")
    parser.add_argument("--os-db", metavar="FILE",
                        help="-O: this nmap-os-db instead of the installed nmap's")


def options(args: argparse.Namespace) -> dict[str, Any]:
    """ScanConfig options of the -O flags (``-A`` implies -O: set ``args.os`` first)."""
    aggressive = bool(getattr(args, "aggressive", False))  # -A, when the CLI has it
    return {"os": bool(args.os) or aggressive, "osscan_limit": bool(args.osscan_limit),
            "osscan_guess": bool(args.osscan_guess), "os_db": args.os_db}


def _uniq(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def host_lines(host: Mapping[str, Any], matches: Sequence[Mapping[str, Any]], *,
               guess: bool = False) -> list[str]:
    """nmap's OS lines for one hosts row and its ``os`` rows (best first)."""
    prints = host.get("os_fingerprint") or []
    if not matches and not prints:
        return []
    text = "\n".join(prints)
    flat = text.replace("\nOS:", "").removeprefix("OS:")
    reliable = re.search(r"[(%]G=N[%)]", flat) is None  # SCAN's G: a good fingerprint
    lines = [] if reliable else [UNRELIABLE]
    perfect = [m for m in matches if m.get("accuracy") == 100]
    classes = [c for m in (perfect or matches[:1]) for c in (m.get("classes") or ())]
    if perfect:
        lines.append("Device type: " + "|".join(_uniq([c.get("type") or "" for c in classes])))
        running = _uniq([" ".join(x for x in (c.get("vendor"), c.get("family"),
                                              c.get("generation")) if x)
                         for c in classes])
        lines.append("Running: " + ", ".join(running))
        cpes = _uniq([cpe for c in classes for cpe in c.get("cpe") or ()])
        if cpes:
            lines.append("OS CPE: " + " ".join(cpes))
        lines.append("OS details: " + ", ".join(m["name"] for m in perfect))
    elif matches:
        if guess or not reliable:
            lines.append("Aggressive OS guesses: " + ", ".join(
                f"{m['name']} ({m['accuracy']}%)" for m in matches))
        lines.append(SUBMIT)
    else:
        lines.append("No OS matches for host")
    if prints and not perfect:
        lines.append("TCP/IP fingerprint:")
        lines.extend(text.splitlines())
    if host.get("distance") is not None:
        d = host["distance"]
        lines.append(f"Network Distance: {d} hop{'s' if d != 1 else ''}")
    seq = json.loads(host["sequences"]) if host.get("sequences") else {}
    tcp = seq.get("tcpsequence", {})
    if tcp.get("index"):
        lines.append(f"TCP Sequence Prediction: Difficulty={tcp['index']} "
                     f"({tcp.get('difficulty', '')})")
    ipid = seq.get("ipidsequence", {})
    if ipid.get("class"):
        lines.append(f"IP ID Sequence Generation: {ipid['class']}")
    return lines
