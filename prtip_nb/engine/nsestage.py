"""The scan's script stage (``-sC``, ``--script``): after the port scan and ``-sV``.

``Scan._run`` calls ``run_script_stage(scan, scripts, args, limits)`` once, after
``run_service_stage`` (or after the port scan alone without ``-sV``). The open TCP ports
and what ``-sV`` wrote on them (the ports table's service columns) become the targets;
the rows go to ``ResultBuilder.add_scripts`` and from there to ``res.scripts``, the
dataset's ``scripts`` part and nmap XML's ``<script>`` elements.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prtip_nb.engine.events import StageChanged
from prtip_nb.nse.api import Script, Target
from prtip_nb.nse.engine import Limits, run

if TYPE_CHECKING:
    import pyarrow as pa

    from prtip_nb.engine.scan import Scan

_COLUMNS = ("host", "port", "proto", "service", "product", "version", "extrainfo", "tunnel",
            "banner")  # fmt: skip


def open_targets(ports: pa.Table) -> list[Target]:
    """A Target per open TCP row of a ports table, with its -sV columns."""
    import pyarrow.compute as pc

    from prtip_nb.results._convert import scalar_str

    rows = ports.filter(pc.and_(
        pc.equal(ports["state"].cast("string"), scalar_str("open")),
        pc.equal(ports["proto"].cast("string"), scalar_str("tcp")),
    ))  # fmt: skip
    have = [c for c in _COLUMNS if c in rows.column_names]
    out = []
    for r in rows.select(have).to_pylist():
        text: dict[str, Any] = {k: None if v is None else str(v) for k, v in r.items()}
        text["port"] = int(r["port"])
        out.append(Target(**text))
    return out


def run_script_stage(scan: Scan, scripts: Sequence[Script], args: Mapping[str, str],
                     limits: Limits) -> None:  # fmt: skip
    """Run ``scripts`` on ``scan``'s open TCP ports; on the scan's own thread."""
    builder = scan.builder
    assert builder is not None
    sid = scan.scan_id or ""
    scan.bus.publish(StageChanged(time.monotonic() - scan.started_at, sid, "scripts"))
    tables = builder.snapshot().tables
    hosts = tables["hosts"]
    pseudo: set[str] = set()  # accept every port, say nothing (svstage): only what spoke
    if "pseudo_services" in hosts.column_names:
        flags = zip(hosts["host"].to_pylist(), hosts["pseudo_services"].to_pylist(), strict=True)
        pseudo = {h for h, f in flags if f}
    targets = [t for t in open_targets(tables["ports"])
               if t.host not in pseudo or t.service is not None]  # fmt: skip
    if not targets or not scripts:
        return
    rows: list[dict[str, Any]] = run(scripts, targets, args, limits, cancel=scan.cancel_event)
    builder.add_scripts(rows)
