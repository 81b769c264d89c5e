"""``discover()``: a ping sweep (nmap's ``-sn``) whose result is a ScanResult.

The result's ``hosts`` table has one row per target (up or down) with nmap's reason
words and the RTT; ``ports`` is empty. ``output=`` writes it as a Parquet dataset like any
scan. The probing itself is engine.pingsweep's (on the round engine); this module
parses, checks privileges, picks the pacing and builds the result.

PACING. Discovery sends one to four packets a host, spread over many hosts. Beyond
loopback the rate adapts (net.ratectl) from the template's start rate
(``START_RATES["discovery"]``), which is also its floor; ``rate=`` pins it.
Retries default to 1 (one more round for silent hosts); ``max_retries=`` overrides it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..config import ScanConfig, is_privileged
from ..errors import PrivilegeError, TargetSpecError
from ..net.counters import Counters, RttEstimator
from ..net.ratectl import rate_plan
from ..targets import TargetSet, parse_targets

if TYPE_CHECKING:
    from ..results import ScanResult

__all__ = ["discover", "up_hosts"]

DEFAULT_RETRIES = 1


def discover(
    targets: str | Sequence[str],
    *,
    exclude: str | Sequence[str] = (),
    family: int | None = None,
    timing: int = 3,
    max_retries: int | None = None,
    timeout: float | None = None,
    rate: float | None = None,
    output: str | None = None,
    **options: Any,
) -> ScanResult:
    """Which of ``targets`` are up (nmap's ``-sn``); returns a ScanResult whose ``hosts``
    DataFrame has host, family, state (up/down), reason and rtt_ms for every target.

    On-link targets are found through the kernel's ARP / NDP ("arp-response",
    "nd-response"); others with ICMP echo, TCP SYN to 443, TCP ACK to 80 and ICMP
    timestamp. Needs root or CAP_NET_RAW (PrivilegeError says how) unless every target
    is one of this machine's own addresses.

    >>> res = discover("198.51.100.0/28")          # doctest: +SKIP
    >>> res.hosts.query("state == 'up'")           # doctest: +SKIP
    """
    cfg = ScanConfig(
        targets=targets, exclude=exclude, family=family, timing=timing,  # type: ignore[arg-type]
        max_retries=max_retries, timeout=timeout, rate=rate, output=output,
        ping_only=True, **options,
    )
    tset = parse_targets(list(cfg.targets), exclude=list(cfg.exclude) or None,
                         exclude_file=cfg.exclude_file, input_file=cfg.input_file,
                         family=cfg.family)
    if not tset:
        raise TargetSpecError("no targets to discover", hint="name hosts, e.g. 198.51.100.0/28")
    from .pingsweep import DISCOVERY_FIX

    if not tset.is_loopback and not is_privileged():
        raise PrivilegeError(f"host discovery (-sn) sends raw ICMP and TCP probes: "
                             f"{DISCOVERY_FIX}")
    return run_discovery(cfg, tset)


def run_discovery(cfg: ScanConfig, tset: TargetSet, counters: Counters | None = None
                  ) -> ScanResult:
    """Discover ``tset`` with ``cfg``'s pacing; the result (written under cfg.output)."""
    from ..probes.records import RecordBuffer
    from ..results import ResultBuilder, ScanMeta, new_scan_id, schema
    from ..results import _convert as cv
    from .checkpoint import public_config
    from .pingsweep import DiscoverEngine, host_verdicts

    tmpl = cfg.template
    meta = ScanMeta(scan_id=new_scan_id(), config=public_config(cfg.to_json()),
                    started=datetime.now(UTC))
    builder = ResultBuilder(meta, sink=cfg.output)
    t0 = time.monotonic()
    records: list[bytes] = []
    out = RecordBuffer(records.append)
    engine = DiscoverEngine(
        tset, out=out,
        rtt=RttEstimator(cfg.probe_timeout, tmpl.min_rtt_timeout, tmpl.max_rtt_timeout),
        retries=DEFAULT_RETRIES if cfg.max_retries is None else cfg.max_retries,
        rate=rate_plan(cfg, loopback=tset.is_loopback, kind="discovery"), counters=counters,
    )
    builder.add_event(0.0, "ScanStarted", {"scan_id": meta.scan_id, "total": tset.size,
                                           "targets": list(cfg.targets), "method": "discovery"})
    engine.run()
    out.flush()
    rows = host_verdicts(tset, b"".join(records))
    elapsed = time.monotonic() - t0
    up = sum(1 for r in rows if r.state == "up")
    builder.add_event(elapsed, "DiscoveryCompleted",
                      {"scan_id": meta.scan_id, "hosts": len(rows), "up": up,
                       "elapsed": elapsed, **engine.stats})
    for message in engine.warnings():  # a ScanWarning event in the result, and a warning
        builder.add_event(elapsed, "ScanWarning", {"scan_id": meta.scan_id, "message": message})
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    cols: dict[str, list[Any]] = {
        "host": [r.host for r in rows],
        "hostname": [tset.hostname(r.host) for r in rows],
        "family": [r.family for r in rows],
        "state": [r.state for r in rows],
        "reason": [r.reason for r in rows],
        "rtt_ms": [r.rtt_ms for r in rows],
        **{c: [0] * len(rows) for c in ("open", "closed", "filtered", "other")},
    }
    hosts = cv.table(cols, schema.file_schema("hosts"))
    if cfg.resolve != "never":  # reverse DNS of the hosts up (-n: none, -R: every target)
        from .names import lookup, record, wanted

        found, took = lookup(cfg, wanted(cfg, hosts, tset))
        if found:
            record(builder, found, took, time.monotonic() - t0)
    if cfg.traceroute:  # -sn --traceroute: ICMP echo probes, as nmap's
        from .names import up_addresses
        from .tracestage import run_traces

        hops, stats = run_traces(cfg, schema.empty("ports"), up_addresses(hosts),
                                 rtt_ms={r.host: r.rtt_ms for r in rows if r.rtt_ms})
        builder.add_rows("trace", hops)
        builder.add_event(time.monotonic() - t0, "TracerouteCompleted",
                          {"scan_id": meta.scan_id, **stats})
    return builder.finish(ended=datetime.now(UTC), hosts=hosts)


def up_hosts(result: ScanResult) -> list[str]:
    """The addresses a discovery result found up, in its (IP) order."""
    hosts = result.tables["hosts"]
    return [h for h, s in zip(hosts["host"].to_pylist(),
                              hosts["state"].cast("string").to_pylist(), strict=True)
            if s == "up"]


# -- the command line: ``prtip-nb scan -sn`` and discovery before a port scan ----------------
def format_sweep(res: ScanResult, elapsed: float) -> str:
    """nmap's ``-sn`` text: a report line for each host that is up, then the totals."""
    from .._version import __version__

    hosts = res.tables["hosts"]
    cols = hosts.select(["host", "hostname", "state", "reason", "rtt_ms"]).to_pydict()
    lines = [f"prtip-nb {__version__} ping sweep {res.scan_id}"]
    up = 0
    for host, name, state, reason, rtt in zip(*cols.values(), strict=True):
        if state != "up":
            continue
        up += 1
        lines.append(f"Scan report for {f'{name} ({host})' if name else host}")
        latency = f" ({rtt / 1000:.6f}s latency)" if rtt is not None else ""
        lines.append(f"Host is up, received {reason}{latency}.")
    n = hosts.num_rows
    lines.append(f"Done: {n} IP address{'' if n == 1 else 'es'} ({up} host{'' if up == 1 else 's'}"
                 f" up) scanned in {elapsed:.2f} s.")
    return "\n".join(lines) + "\n"


def _sweep_config(targets: Sequence[str], options: dict[str, Any]) -> ScanConfig:
    keep = ("exclude", "exclude_file", "input_file", "family", "timing", "rate", "max_retries",
            "resolve", "dns_servers", "traceroute")
    return ScanConfig(targets=tuple(targets), ping_only=True,
                      **{k: options[k] for k in keep if options.get(k) is not None})


def cmd_ping_sweep(targets: Sequence[str], options: dict[str, Any]) -> tuple[ScanResult, str]:
    """``prtip-nb scan -sn``: (result, nmap-like text). ``options`` are the scan options
    the command line gathered; pacing, exclusions and ``output`` apply."""
    cfg = _sweep_config(targets, options)
    if options.get("output"):
        cfg = cfg.replace(output=options["output"])
    t0 = time.monotonic()
    res = discover(list(cfg.targets), exclude=cfg.exclude, family=cfg.family, timing=cfg.timing,
                   max_retries=cfg.max_retries, rate=cfg.rate, output=cfg.output,
                   exclude_file=cfg.exclude_file, input_file=cfg.input_file,
                   resolve=cfg.resolve, dns_servers=cfg.dns_servers, traceroute=cfg.traceroute)
    return res, format_sweep(res, time.monotonic() - t0)


def discover_first(targets: Sequence[str], options: dict[str, Any]) -> ScanResult | None:
    """nmap's default before a port scan: the discovery result of ``targets`` (not written
    anywhere), or None when discovery does not apply (only loopback or own addresses, or no
    raw sockets: every target is scanned, as with -Pn). A bad target spec also returns
    None: the scan reports it."""
    from ..errors import SpecError

    try:
        # No names here: the port scan that follows resolves the hosts up (one lookup each).
        cfg = _sweep_config(targets, options).replace(resolve="never", traceroute=False)
        tset = parse_targets(list(cfg.targets), exclude=list(cfg.exclude) or None,
                             exclude_file=cfg.exclude_file, input_file=cfg.input_file,
                             family=cfg.family)
    except SpecError:
        return None
    if not tset or tset.is_loopback or not is_privileged():
        return None
    return run_discovery(cfg, tset)
