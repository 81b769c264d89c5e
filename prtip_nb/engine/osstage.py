"""The scan's ``-O`` stage: OS detection on the hosts the port scan found (not pure: it
sends, through ``net.osscan``; the other modules of this package are).

``Scan._run`` calls ``run_os_stage(scan)`` after the port scan (and after -sV) when
``config.os`` is set. For each host: pick the ports (``detect.plan_hosts``), probe
(``net.osscan.OsProber`` driven by ``engine.probeloop``, all hosts in parallel), compute
the fingerprint and match it against the installed nmap's nmap-os-db (``detect.analyze``);
results go to the ``os`` table and the hosts' OS columns (``ResultBuilder.add_os``), and a
``ScanWarning`` notes each host whose fingerprint nmap would call unreliable.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..osdetect.detect import HostOs, analyze, os_rows, plan_hosts
from ..osdetect.osdb import load_db

if TYPE_CHECKING:
    import pyarrow as pa

    from .scan import Scan

__all__ = ["detect_hosts", "host_columns", "port_rows", "preflight", "reply_timeout",
           "run_os_stage"]


def preflight(*, family: int | None = None, os_db: str | None = None) -> None:
    """Fail before the scan sends anything if -O could not run: no nmap-os-db
    (ConfigError), no raw sockets (PrivilegeError), or only IPv6 asked for."""
    from ..errors import ConfigError
    from ..net.rawsock import open_raw_socket

    if family == 6:
        raise ConfigError("OS detection (-O) is IPv4 only: nmap's IPv6 method is not built",
                          hint="drop -O, or scan IPv4 targets")
    load_db(os_db)
    open_raw_socket(4).close()


def port_rows(ports: pa.Table) -> list[tuple[str, str, int, str]]:
    """(host, proto, port, state) of every ports row, IPv4 hosts only."""
    cols = ports.select(["host", "proto", "port", "state"]).to_pydict()
    return [(h, str(pr), int(p), str(s)) for h, pr, p, s in zip(
        cols["host"], cols["proto"], cols["port"], cols["state"], strict=True) if ":" not in h]


def reply_timeout(ports: pa.Table) -> float:
    """How long to wait for the OS probes' replies: four times the slowest RTT the port
    scan measured, 0.5 s at least (a lab) and 5 s at most."""
    import pyarrow.compute as pc

    worst = pc.max(ports["rtt_ms"]).as_py() if ports.num_rows else None
    return min(5.0, max(0.5, 4 * (worst or 0) / 1000))


def detect_hosts(rows: list[tuple[str, str, int, str]], *, limit: bool = False,
                 os_db: str | None = None, cancelled: Any = lambda: False,
                 seed: int | None = None, timeout: float = 0.5) -> list[HostOs]:
    """Fingerprint and match every host of ``rows`` (see ``detect.plan_hosts``)."""
    from .._version import __version__
    from ..net.osscan import OsProber, OsTarget
    from .probeloop import run_probes

    db = load_db(os_db)  # before a packet: a missing nmap-os-db is a clear error
    plans = plan_hosts(rows, limit=limit, seed=seed)
    with OsProber([OsTarget(p.host, p.open_port, p.closed_port, p.closed_udp)
                   for p in plans], timeout=timeout) as prober:
        run_probes(prober, budget=prober.budget, cancelled=cancelled)
    runs = prober.runs
    return [analyze(p.host, r.probes, r.replies, r.sent, db, open_port=p.open_port,
                    closed_port=p.closed_port, closed_udp=p.closed_udp, on_link=r.on_link,
                    reliable=p.reliable, version=__version__)
            for p, r in zip(plans, runs, strict=True)]


def host_columns(res: HostOs) -> dict[str, Any]:
    """The hosts-table columns of one result (``results._os.HOST_COLUMNS``)."""
    return {"os_portused": res.ports_used, "os_fingerprint": [res.wrapped],
            "distance": res.distance, "sequences": json.dumps(res.sequences)}


def run_os_stage(scan: Scan) -> None:
    """Detect the OS of ``scan``'s hosts; runs on the scan's own thread."""
    import time

    from .events import ScanWarning, StageChanged

    builder = scan.builder
    assert builder is not None
    sid = builder.meta.scan_id
    scan.bus.publish(StageChanged(time.monotonic() - scan.started_at, sid, "os"))
    cfg = scan.config
    ports = builder.snapshot().tables["ports"]
    results = detect_hosts(port_rows(ports), limit=cfg.osscan_limit, os_db=cfg.os_db,
                           cancelled=scan.cancel_event.is_set, seed=cfg.seed,
                           timeout=reply_timeout(ports))
    v6 = {h for h in ports["host"].to_pylist() if ":" in h}
    if v6:
        scan.bus.publish(ScanWarning(time.monotonic() - scan.started_at, sid,
                                     f"OS detection is IPv4 only: {len(v6)} IPv6 host(s) "
                                     "not fingerprinted"))
    rows = [row for res in results for row in os_rows(res)]
    builder.add_os(rows, {res.host: host_columns(res) for res in results})
    for res in results:
        if res.warning:
            scan.bus.publish(ScanWarning(time.monotonic() - scan.started_at, sid,
                                         f"{res.host}: {res.warning}"))
