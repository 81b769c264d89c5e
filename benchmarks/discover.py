"""Host discovery benchmark (issue 4): a /24 ping sweep against ``nmap -sn``.

- discover-24: a veth lab (prtip_nb.lab.veth) whose on-link /24 has 20 hosts up -- the
  scanner's own address, the gateway and 18 more -- and 234 down, swept as
  198.51.100.1-254. ``prtip-nb scan -sn`` (whole process) and ``nmap -sn -n``
  alternately, run by run, in the same namespace; plus ``pn.discover`` in-process (after
  imports). Target: whole-process median <= 1.0x nmap's, and exactly the same hosts up.
"""

from __future__ import annotations

import re
import shutil
import statistics
import time
from typing import Any

from .harness import Run, as_dict, save, summarise, timed

RANGE = "198.51.100.1-254"
EXTRA_UP = [f"198.51.100.{n}" for n in range(10, 250, 13)][:18]  # spread over the /24
_REPORT = re.compile(r"^(?:Nmap )?[Ss]can report for (\S+)$", re.M)


def _up(text: str) -> set[str]:
    return set(_REPORT.findall(text))


def discover_24(runs: int = 5) -> dict[str, Any]:
    from prtip_nb.engine.discovery import discover, up_hosts
    from prtip_nb.lab.veth import SCANNER4, VethLab

    nmap = shutil.which("nmap")
    if nmap is None:
        raise SystemExit("nmap is not installed: apt-get install nmap (make bench does it)")
    ours_cmd = ["prtip-nb", "scan", "-sn", "-n", RANGE]
    nmap_cmd = [nmap, "-sn", "-n", RANGE]
    results: list[Run] = []
    seen: dict[str, list[set[str]]] = {"prtip_nb": [], "nmap": []}
    inproc: list[float] = []
    with VethLab(up=EXTRA_UP, tag="bd") as lab:
        truth = {SCANNER4, *[a for a in lab.up_hosts if "." in a]}
        for cmd, tool in ((ours_cmd, "prtip_nb"), (nmap_cmd, "nmap")):  # warm-up
            timed(cmd, tool)
        for _ in range(runs):
            for cmd, tool in ((ours_cmd, "prtip_nb"), (nmap_cmd, "nmap")):
                out: list[str] = []
                results.append(timed(cmd, tool, capture=out))
                seen[tool].append(_up(out[-1]))
            t0 = time.perf_counter()
            res = discover(RANGE)
            inproc.append(time.perf_counter() - t0)
            seen.setdefault("inprocess", []).append(set(up_hosts(res)))
    summary: dict[str, Any] = dict(summarise(results, "prtip_nb", "nmap"))
    summary["inprocess_median_s"] = statistics.median(inproc)
    summary["up_expected"] = len(truth)
    summary["exact"] = all(s == truth for s in seen["prtip_nb"] + seen["inprocess"])
    summary["nmap_exact"] = all(s == truth for s in seen["nmap"])
    summary["same_up_sets"] = all(a == b for a, b in zip(seen["prtip_nb"], seen["nmap"],
                                                         strict=True))
    summary["runs"] = runs
    for r in results:
        print(f"  {r.tool:9s} {r.wall_s:7.3f} s  {r.peak_rss_bytes / 2**20:6.1f} MiB")
    print(f"  in-process {summary['inprocess_median_s']:.3f} s (median)")
    payload = {"scenario": "discover-24", "summary": summary,
               "runs": [as_dict(r) for r in results], "inprocess_s": inproc}
    print(f"  saved {save('discover-24', payload)}")
    return payload
