"""Charts of scan results: pure functions from a ScanResult (or one of its DataFrames) to a
plotly ``go.Figure``. Also reachable as ``pn.plot``.

>>> import prtip_nb as pn
>>> pn.plot.ports(res)          # open ports, host × port; hover: service, banner  # doctest: +SKIP
>>> pn.plot.diff(old, new)      # what opened and closed between two scans        # doctest: +SKIP
>>> pn.plot.topology(res)       # traceroute paths as a graph (traceroute=True)   # doctest: +SKIP

Every figure has a title, axis labels and hover text, and works as well on a live
snapshot (``Scan.result``) as on a scan read back from Parquet (``pn.read_scans``).
Text that came off the wire (banners, certificate names) is HTML-escaped before plotly
sees it.
"""

from __future__ import annotations

from prtip_nb.viz.diff import changes, diff
from prtip_nb.viz.ports import certificates, ports, rtt, services, states
from prtip_nb.viz.telemetry import memory, throughput
from prtip_nb.viz.topology import topology

__all__ = [
    "certificates",
    "changes",
    "diff",
    "memory",
    "ports",
    "rtt",
    "services",
    "states",
    "throughput",
    "topology",
]
