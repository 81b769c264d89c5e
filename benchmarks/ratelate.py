"""Late is not lost (issues 13, 20): does the adaptive rate back off when nothing was lost?

``net-late``: a RangeLab /24 x the top 100 ports at -T4 (no drops, no bottleneck: every
probe is answered, so a backoff that stands is a false one), scanned in a child process per
run, without load and with one or two busy loops (a Python ``while`` loop, bounded in time)
competing for the box's cores. Each run counts the controller's backoffs (its ``log``), the
undone ones (``undone``, where the tree has it), real loss (retries sent: a probe silent
past its timeout), and checks the result against the truth.

``PRTIP_LATE_TREES=name=path,...`` runs the same child under other source trees
(``PYTHONPATH``), alternately in the same run, for a before/after comparison.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from .harness import save

PREFIX = "198.18.0.0/24"
LOADS = {"idle": 0, "busy1": 1, "busy2": 2}

# The child: one in-process scan, the controller found through its constructor.
_CHILD = r"""
import json, sys, time
import prtip_nb as pn
from prtip_nb.net import ratectl
made = []
init = ratectl.AdaptiveRate.__init__
def spy(self, *a, **k):
    init(self, *a, **k)
    made.append(self)
ratectl.AdaptiveRate.__init__ = spy
t0 = time.monotonic()
res = pn.scan(sys.argv[1], None, top_ports=100, method="syn", timing=4,
              discover=False)
took = time.monotonic() - t0
st = res.ports["state"].astype(str)
tel = res.telemetry
log = [e for c in made for e in c.log]
print(json.dumps({
    "file": pn.__file__, "s": took, "rows": len(st), "open": int((st == "open").sum()),
    "filtered": int((st == "filtered").sum()),
    "retries": int(tel["retries"].max()) if len(tel) else 0,
    "backoffs": sum(1 for e in log if e[2] == "backoff"),
    "undone": sum(getattr(c, "undone", 0) for c in made),
    "max_rate": max((e[1] for e in log), default=0.0),
}))
"""


def _busy(n: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """``n`` busy loops, each bounded in time; the caller kills them by their pid."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def _trees() -> dict[str, str]:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"this": here}
    for item in filter(None, os.environ.get("PRTIP_LATE_TREES", "").split(",")):
        name, _, path = item.partition("=")
        trees[name] = path
    return trees


def net_late(runs: int = 4) -> dict[str, Any]:
    from prtip_nb.lab import RangeLab

    trees = _trees()
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {
        t: {load: [] for load in LOADS} for t in trees}
    # No drops, no bottleneck: the truth is 80 and 443 open on all 256 hosts, the rest closed.
    with RangeLab(PREFIX, tcp=(80, 443)):
        for load, n in LOADS.items():
            busy = _busy(n, 60 * runs * len(trees) + 60)
            try:
                time.sleep(0.3 if n else 0)
                for _ in range(runs):
                    for tree, path in trees.items():
                        env = {**os.environ, "PYTHONPATH": path}
                        # cwd too: ``python -c`` puts it first on sys.path.
                        out = subprocess.run([sys.executable, "-c", _CHILD, PREFIX], env=env,
                                             cwd=path, capture_output=True, text=True,
                                             timeout=300, check=True)
                        r = json.loads(out.stdout.strip().splitlines()[-1])
                        assert r["file"].startswith(path), (tree, r["file"])
                        r["exact"] = r["open"] == 512 and r["filtered"] == 0 and \
                            r["rows"] == 25_600
                        rows[tree][load].append(r)
                        print(f"  {tree:7s} {load:6s} {r['s']:6.3f} s backoffs "
                              f"{r['backoffs']:2d} undone {r['undone']:2d} retries "
                              f"{r['retries']:4d} max rate {r['max_rate']:9,.0f}/s "
                              f"exact {r['exact']} (load {os.getloadavg()[0]:.2f})",
                              flush=True)
            finally:
                for p in busy:
                    p.kill()
                    p.wait()
    summary: dict[str, Any] = {"runs": runs}
    for tree, by_load in rows.items():
        for load, rs in by_load.items():
            # A false backoff: one not undone, in a run that lost nothing (no retries).
            false = sum(1 for r in rs if r["retries"] == 0 and r["backoffs"] > r["undone"])
            summary[f"{tree}/{load}"] = {
                "scans_false_backoff": false, "scans": len(rs),
                "backoffs": sum(r["backoffs"] for r in rs),
                "undone": sum(r["undone"] for r in rs),
                "lossless_scans": sum(1 for r in rs if r["retries"] == 0),
                "median_s": statistics.median(r["s"] for r in rs),
                "exact": all(r["exact"] for r in rs),
            }
    summary["exact"] = all(v["exact"] for v in summary.values() if isinstance(v, dict))
    for k, v in summary.items():
        if isinstance(v, dict):
            print(f"  {k:16s} false backoff in {v['scans_false_backoff']}/{v['scans']} scans "
                  f"(backoffs {v['backoffs']}, undone {v['undone']}, lossless scans "
                  f"{v['lossless_scans']}), median {v['median_s']:.3f} s, exact {v['exact']}")
    print(f"  saved {save('net-late', {'scenario': 'net-late', 'summary': summary})}")
    return {"summary": summary}


__all__ = ["net_late"]
