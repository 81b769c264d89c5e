"""``prtip-nb demo``: start the built-in lab, scan it, store and report the scan.

As root the whole demo runs inside a private network namespace (``unshare --net``), so
it may scan every port of its own 127.0.0.1. Without root it scans only the lab's own
ports on the host's 127.0.0.1, which other programs share.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from .lab import Lab, can_unshare, in_private_netns, reexec_in_private_netns

if TYPE_CHECKING:
    import pandas as pd

# 50 plain listeners plus the lab's services (http, https, ssh, smtp, ftp, udp echo).
DEMO_PLAIN = 50
SUMMARY_WIDTH = 100  # columns: a default terminal, or a notebook cell's output, unwrapped


def run_demo(output: str, report_path: str) -> int:
    private = os.environ.get("PRTIP_NB_NETNS") == "1" or in_private_netns()
    if not private and can_unshare():
        reexec_in_private_netns()  # does not return when it re-executes
        private = True
    from . import scan
    from .reporting import report

    t0 = time.monotonic()
    if private:
        lab = Lab.defaults(host="127.0.0.1", tcp=DEMO_PLAIN)
    else:
        # The host's loopback is shared with other programs: kernel-picked ports only.
        print("demo: not root, so no private namespace: scanning only the lab's own ports")
        lab = Lab.defaults(host="127.0.0.1", ephemeral=True)
    with lab:
        tcp_ports = lab.open_ports.get("tcp", [])
        spec = "-" if private else ",".join(map(str, tcp_ports))
        print(f"demo: lab up on 127.0.0.1 with {len(tcp_ports)} TCP services; "
              f"scanning {'all 65,535 ports' if private else spec}")
        res = scan("127.0.0.1", ports=spec, method="connect", timing=4)
    found = set(res.open_ports["port"].astype(int))
    truth = set(tcp_ports)
    missed, extra = truth - found, found - truth
    path = res.to_parquet(output)
    html = report(res, report_path)
    from .results import read_scans

    back = read_scans(output, scan_id=res.scan_id)
    print(summary_text(res.summary()))
    print(f"\nopen ports found: {len(found)} of {len(truth)} lab ports; missed {sorted(missed)}, "
          f"false opens {sorted(extra)}")
    took = (res.ended - res.started).total_seconds() if res.ended and res.started else 0.0
    print(f"scan: {len(res.ports)} port rows in {took:.2f} s")
    print(f"Parquet dataset: {path} ({len(back.ports)} rows read back)")
    charts = ("with charts" if "plotly" in sys.modules
              else "tables only: plotly is missing (reinstall prtip_nb)")
    print(f"HTML report:     {html} ({charts})")
    try:
        import duckdb

        q = f"select count(*) from read_parquet('{output}/*/ports/*.parquet') where state='open'"
        row = duckdb.execute(q).fetchone()
        print(f"duckdb: {row[0] if row else 0} open rows across the dataset")
    except ImportError:
        print("duckdb: not installed (pip install 'prtip_nb[sql]' to query the dataset with SQL)")
    print(f"demo done in {time.monotonic() - t0:.1f} s")
    return 0 if not missed and not extra else 1


def summary_text(summary: pd.DataFrame, width: int = SUMMARY_WIDTH) -> str:
    """``ScanResult.summary()`` as text no wider than ``width`` (given room for the counts).

    WHY cut by hand: pandas' ``display.max_colwidth`` does not shorten ArrowDtype columns,
    and a full scan's open-ports list runs to hundreds of characters.
    """
    import pandas as pd

    rest = summary.drop(columns="open_ports").to_string(index=False)
    room = max(len("open_ports"), width - 1 - max(map(len, rest.splitlines()), default=0))
    short = summary.copy()
    short["open_ports"] = [
        "" if pd.isna(v) else _cut(str(v), room) for v in summary["open_ports"]
    ]
    return short.to_string(index=False)


def _cut(ports: str, room: int) -> str:
    """The whole "22/tcp, 80/tcp, ..." labels that fit in ``room``, then "… +N more"."""
    if len(ports) <= room:
        return ports
    labels = ports.split(", ")
    budget = room - len(f", … +{len(labels)} more")  # the tail at its longest
    kept, used = 0, 0
    for label in labels:
        used += len(label) + (2 if kept else 0)
        if used > budget:
            break
        kept += 1
    tail = f"… +{len(labels) - kept} more"
    return ", ".join([*labels[:kept], tail])[:room]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo("data/scans", "data/report.html"))
