"""``prtip-nb demo``: start the built-in lab, scan it, store and report the scan.

As root the whole demo runs inside a private network namespace (``unshare --net``), so
it may scan every port of its own 127.0.0.1. Without root it scans only the lab's own
ports on the host's 127.0.0.1, which other programs share.
"""

from __future__ import annotations

import os
import sys
import time

from .lab import Lab, can_unshare, in_private_netns, reexec_in_private_netns

# 50 plain listeners plus the lab's services (http, https, ssh, smtp, ftp, udp echo).
DEMO_PLAIN = 50


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
    import pandas as pd

    with pd.option_context("display.max_colwidth", 60, "display.width", 160):
        print(res.summary().to_string(index=False))
    print(f"\nopen ports found: {len(found)} of {len(truth)} lab ports; missed {sorted(missed)}, "
          f"false opens {sorted(extra)}")
    took = (res.ended - res.started).total_seconds() if res.ended and res.started else 0.0
    print(f"scan: {len(res.ports)} port rows in {took:.2f} s")
    print(f"Parquet dataset: {path} ({len(back.ports)} rows read back)")
    charts = "with charts" if "plotly" in sys.modules else "tables only: pip install 'prtip_nb[nb]'"
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo("data/scans", "data/report.html"))
