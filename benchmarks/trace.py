"""Traceroute benchmark (issue 18): 50 hosts behind the same four routers, against
``nmap --traceroute``.

- trace-50: lab.routelab's chain R1..R4 (R3 silent) with 50 targets behind it, each with
  port 80 open. ``prtip-nb scan -sS -p80 -n --traceroute`` and ``nmap -sS -p80 -n
  --traceroute`` (whole process, host discovery included in both) alternately, run by run,
  in the same namespace. Checked: every host's hops equal nmap's (from both -oX files).
  Target: median <= 1.0x nmap's.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .harness import Run, as_dict, save, summarise, timed

HOSTS = 50


def _hops(xml: str) -> dict[str, list[tuple[int, str]]]:
    out = {}
    for block in re.findall(r"<host\b.*?</host>", xml, re.S):
        addr = re.search(r'<address addr="([^"]+)" addrtype="ipv[46]"', block)
        hops = re.findall(r'<hop ttl="(\d+)" ipaddr="([^"]+)"', block)
        if addr and hops:
            out[addr.group(1)] = [(int(t), a) for t, a in hops]
    return out


def trace_50(runs: int = 5) -> dict[str, Any]:
    from prtip_nb.lab.routelab import RouteLab

    nmap = shutil.which("nmap")
    if nmap is None:
        raise SystemExit("nmap is not installed: apt-get install nmap (make bench does it)")
    results: list[Run] = []
    same: list[bool] = []
    with RouteLab(targets=HOSTS, silent=(3,), tcp=[80], tag="bt") as lab, \
            tempfile.TemporaryDirectory() as tmp:
        spec = f"198.19.0.1-{HOSTS}"
        ours_xml, nmap_xml = Path(tmp) / "ours.xml", Path(tmp) / "nmap.xml"
        ours_cmd = ["prtip-nb", "scan", "-sS", "-p80", "-n", "--traceroute", "-oX",
                    str(ours_xml), spec]
        nmap_cmd = [nmap, "-sS", "-p80", "-n", "--traceroute", "-oX", str(nmap_xml), spec]
        expected = [(n, a) for n, a in enumerate(lab.expected_hops(4), 1) if a]
        for cmd, tool in ((ours_cmd, "prtip_nb"), (nmap_cmd, "nmap")):  # warm-up
            timed(cmd, tool)
        for _ in range(runs):
            results.append(timed(ours_cmd, "prtip_nb"))
            results.append(timed(nmap_cmd, "nmap"))
            ours, theirs = _hops(ours_xml.read_text()), _hops(nmap_xml.read_text())
            same.append(ours == theirs and len(ours) == HOSTS
                        and all(h[:-1] == expected for h in ours.values()))
    summary: dict[str, Any] = dict(summarise(results, "prtip_nb", "nmap"))
    summary["exact"] = all(same)
    summary["runs"] = runs
    for r in results:
        print(f"  {r.tool:9s} {r.wall_s:7.3f} s  {r.peak_rss_bytes / 2**20:6.1f} MiB")
    payload = {"scenario": "trace-50", "summary": summary,
               "runs": [as_dict(r) for r in results]}
    print(f"  saved {save('trace-50', payload)}")
    return payload
