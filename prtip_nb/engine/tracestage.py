"""The ``--traceroute`` stage of a scan: pick a probe per host from what the scan found,
trace every host that is up at once (net.traceroute), hops into the ``trace`` table.

The probe, as nmap picks it: a SYN to an open TCP port, else to a closed one, else UDP to
a closed UDP port, else an ICMP echo. The TTL the scan's reply arrived with gives the
starting distance. Hops that stayed silent are not rows (nmap's XML leaves them out too;
the gap in ``ttl`` shows them). With reverse DNS on, hop addresses get names.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from ..config import ScanConfig
    from ..net.traceroute import Hop, TraceTarget
    from .scan import Scan

#: Per-probe wait bounds (seconds): 3 x the host's RTT, within these.
MIN_TIMEOUT, MAX_TIMEOUT = 0.1, 1.0


def choose_probes(ports: pa.Table, hosts: Sequence[str]) -> list[TraceTarget]:
    """One TraceTarget per host of ``hosts`` from the scan's port rows (nmap's order of
    preference: open TCP, closed TCP, closed UDP, else ICMP echo)."""
    from ..net.traceroute import TraceTarget

    cols = ports.select(["host", "proto", "port", "state", "ttl"]).to_pydict()
    best: dict[str, tuple[int, str, int, int | None]] = {}
    rank = {("tcp", "open"): 0, ("tcp", "closed"): 1, ("udp", "closed"): 2}
    for host, proto, port, state, ttl in zip(*cols.values(), strict=True):
        r = rank.get((str(proto), str(state)))
        if r is None:
            continue
        cur = best.get(host)
        if cur is None or (r, port) < (cur[0], cur[2]):
            best[host] = (r, str(proto), int(port), ttl)
    out = []
    for h in hosts:
        if h in best:
            _r, proto, port, ttl = best[h]
            out.append(TraceTarget(h, proto, port, ttl or None))
        else:
            out.append(TraceTarget(h, "icmp", 0, None))
    return out


def trace_rows(traces: dict[str, list[Hop]], probes: Sequence[TraceTarget],
               names: dict[str, str | None]) -> list[dict[str, Any]]:
    """``trace`` table rows: answered hops only, in TTL order, per host."""
    by_host = {p.host: p for p in probes}
    rows = []
    for host, hops in traces.items():
        p = by_host[host]
        for hop in hops:
            if hop.address is None:
                continue
            rows.append({"host": host, "ttl": hop.ttl, "address": hop.address,
                         "rtt_ms": hop.rtt_ms, "hostname": names.get(hop.address),
                         "probe_port": p.port if p.proto != "icmp" else None,
                         "probe_proto": p.proto})
    return rows


def run_traces(config: ScanConfig, ports: pa.Table, hosts: Sequence[str], *,
               rtt_ms: dict[str, float] | None = None,
               cancelled: Any = lambda: False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Trace ``hosts`` with the probes ``ports`` suggest; (trace rows, stats)."""
    from ..net.traceroute import Tracer
    from .probeloop import run_probes

    probes = choose_probes(ports, hosts)
    worst = max((rtt_ms or {}).values(), default=0.0) or 0.0
    timeout = min(MAX_TIMEOUT, max(MIN_TIMEOUT, 3 * worst / 1000))
    t0 = time.monotonic()
    with Tracer(probes, timeout=timeout) as tracer:
        run_probes(tracer, budget=tracer.budget, cancelled=cancelled)
    traces = tracer.hops()
    names: dict[str, str | None] = {}
    if config.resolve != "never":
        from ..net.rdns import resolve_names

        addrs = sorted({h.address for hops in traces.values() for h in hops
                        if h.address is not None})
        found = resolve_names(addrs, config.dns_servers or None)
        names = {a: v.name for a, v in found.items()}
    stats = {"hosts": len(hosts), "probes": tracer.sent, "per_host": tracer.stats(),
             "timeout_s": timeout, "elapsed": round(time.monotonic() - t0, 6)}
    return trace_rows(traces, probes, names), stats


def run_trace_stage(scan: Scan) -> None:
    """``--traceroute`` after the port scan (Scan._run calls this)."""
    from ..config import is_privileged
    from .events import ScanWarning, StageChanged
    from .names import up_addresses

    builder = scan.builder
    assert builder is not None
    sid = scan.scan_id or ""
    scan.bus.publish(StageChanged(time.monotonic() - scan.started_at, sid, "traceroute"))
    if not is_privileged():
        scan.bus.publish(ScanWarning(time.monotonic() - scan.started_at, sid,
                                     "--traceroute sends raw packets: it needs root or "
                                     "CAP_NET_RAW; no trace was made"))
        return
    snap = builder.snapshot().tables
    hosts = snap["hosts"]
    up = up_addresses(hosts)
    if not up:
        return
    rtts = {h: r for h, r in zip(hosts["host"].to_pylist(), hosts["rtt_ms"].to_pylist(),
                                 strict=True) if r is not None}
    rows, stats = run_traces(scan.config, snap["ports"], up, rtt_ms=rtts,
                             cancelled=scan.cancel_event.is_set)
    builder.add_rows("trace", rows)
    builder.add_event(time.monotonic() - scan.started_at, "TracerouteCompleted",
                      {"scan_id": sid, **stats})


def trace_lines(trace: pa.Table) -> dict[str, list[str]]:
    """nmap's TRACEROUTE block of each host in ``trace``, as text lines: hops with RTT and
    address (name first when known), "..." for silent ones, and "Hops 1-k are the same as
    for X" where a host earlier in the table has the same first k hops."""
    if trace.num_rows == 0:
        return {}
    cols = trace.select(["host", "ttl", "address", "rtt_ms", "hostname", "probe_port",
                         "probe_proto"]).to_pylist()
    by_host: dict[str, list[dict[str, Any]]] = {}
    for r in cols:
        by_host.setdefault(r["host"], []).append(r)
    out: dict[str, list[str]] = {}
    seen: list[tuple[str, dict[int, str]]] = []
    for host, hops in by_host.items():
        hops.sort(key=lambda r: r["ttl"])
        path = {r["ttl"]: r["address"] for r in hops}
        last = hops[-1]["ttl"]
        first = hops[0]
        using = (f"port {first['probe_port']}/{first['probe_proto']}"
                 if first["probe_port"] is not None else f"proto 1/{first['probe_proto']}")
        lines = [f"TRACEROUTE (using {using})", "HOP RTT      ADDRESS"]
        same, like = 0, None
        for other, opath in seen:  # the longest common prefix below the host itself
            k = 0
            while k + 1 < last and path.get(k + 1) == opath.get(k + 1):
                k += 1
            if k > same and any(path.get(t) for t in range(1, k + 1)):
                same, like = k, other
        if like is not None:
            lines.append(f"-   Hops 1-{same} are the same as for {like}")
        for ttl in range(same + 1, last + 1):
            r = next((h for h in hops if h["ttl"] == ttl), None)
            if r is None:
                lines.append(f"{ttl:<3} ...")
                continue
            rtt = f"{r['rtt_ms']:.2f} ms" if r["rtt_ms"] is not None else "--"
            addr = f"{r['hostname']} ({r['address']})" if r["hostname"] else r["address"]
            lines.append(f"{ttl:<3} {rtt:<8} {addr}")
        seen.append((host, path))
        out[host] = lines
    return out
