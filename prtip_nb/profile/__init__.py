"""Self-profiling: the ProRT-IP report's tables, reproduced for prtip_nb (and nmap).

>>> df = pn.profile.run("report")      # doctest: +SKIP  (root: private namespaces)
>>> figs = pn.profile.report(df)       # doctest: +SKIP  plotly figures
"""

from __future__ import annotations

from .report import report
from .runner import run
from .scenarios import REPORT, SMALL, Scenario

__all__ = ["REPORT", "SMALL", "Scenario", "report", "run"]
