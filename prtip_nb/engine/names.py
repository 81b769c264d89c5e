"""The reverse-DNS stage of a scan: which addresses to resolve, and where the names go.

nmap resolves the hosts that are up unless told ``-n``, and every target with ``-R``;
``ScanConfig.resolve`` says the same ("up", "all", "never"). The names go to the hosts
table (``hostnames`` entries of type "PTR" with their forward confirmation, and
``hostname`` when the host had none) through ``ResultBuilder.add_hostnames``, and a
``ReverseDns`` event in the events table says how the lookups went.

A hosts row is "up" when the scan had any answer from it (or discovery found it up).
With ``-Pn`` nmap counts every target as up and resolves them all: ``resolve="all"``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    import pyarrow as pa

    from ..config import ScanConfig
    from ..net.rdns import HostName
    from ..results import ResultBuilder
    from ..targets import TargetSet
    from .scan import Scan

#: resolve="all" over more targets than this resolves only the hosts that are up: a /8 of
#: PTR queries (16M) is not what anyone means by -R on a port scan.
ALL_TARGETS_MAX = 1 << 16


def up_addresses(hosts: pa.Table) -> list[str]:
    states = hosts["state"].cast("string").to_pylist()
    return [h for h, s in zip(hosts["host"].to_pylist(), states, strict=True) if s == "up"]


def wanted(config: ScanConfig, hosts: pa.Table, targets: TargetSet | None) -> list[str]:
    """The addresses ``config.resolve`` asks names for."""
    if config.resolve == "never":
        return []
    if config.resolve == "all":
        if targets is not None and targets.size <= ALL_TARGETS_MAX:
            return list(targets)
        return hosts["host"].to_pylist()
    return up_addresses(hosts)


def lookup(config: ScanConfig, addresses: Sequence[str], *, confirm: bool = True
           ) -> tuple[dict[str, HostName], float]:
    """Resolve ``addresses`` with ``config``'s servers; (results, seconds taken).
    ``confirm``: look each name up forward too (the hosts table's ``confirmed``)."""
    from ..net.rdns import resolve_names

    t0 = time.monotonic()
    found = resolve_names(addresses, config.dns_servers or None, confirm=confirm)
    return found, time.monotonic() - t0


def record(builder: ResultBuilder, found: dict[str, HostName], elapsed: float, t: float
           ) -> dict[str, Any]:
    """Names into ``builder`` (merged into hosts at finish), and the ``ReverseDns`` event."""
    builder.add_hostnames({a: (h.name, h.confirmed) for a, h in found.items()
                           if h.name is not None})
    summary = summarize(found.values(), elapsed)
    builder.add_event(t, "ReverseDns", {"scan_id": builder.meta.scan_id, **summary})
    return summary


def summarize(found: Iterable[HostName], elapsed: float) -> dict[str, Any]:
    counts: dict[str, int] = {}
    confirmed = 0
    for h in found:
        counts[h.status] = counts.get(h.status, 0) + 1
        confirmed += bool(h.confirmed)
    return {"addresses": sum(counts.values()), "named": counts.get("ok", 0)
            + counts.get("hosts", 0), "confirmed": confirmed, "by_status": counts,
            "elapsed": round(elapsed, 6)}


def run_names_stage(scan: Scan) -> None:
    """Resolve ``scan``'s hosts after its port scan (Scan._run calls this)."""
    from .events import StageChanged

    builder = scan.builder
    assert builder is not None
    if scan.config.resolve == "never":
        return
    scan.bus.publish(StageChanged(time.monotonic() - scan.started_at, scan.scan_id or "", "dns"))
    # host_states, not snapshot(): a sorted copy of every row was this stage's whole cost
    addresses = wanted(scan.config, builder.host_states(), scan.targets)
    if not addresses:
        return
    found, elapsed = lookup(scan.config, addresses)
    record(builder, found, elapsed, time.monotonic() - scan.started_at)


# -- ``prtip-nb scan -sL``: list the targets, with their names -------------------------------
def list_scan(targets: Sequence[str], options: dict[str, Any], *, result: bool = True
              ) -> tuple[Any, str]:
    """nmap's ``-sL``: every target, named by reverse DNS (unless ``-n``), nothing else
    sent. (result, nmap-like text); the hosts are "unknown", reason "user-set", as nmap's.

    ``result=False``: no ScanResult (None in its place), no forward confirmation, and
    nothing of pyarrow, numpy or pandas is imported: the text alone is what the command
    line prints when no output file (-o, -oX, -oJ, -oG) asks for the result, and the
    interpreter's start is most of its cost (benchmarks/rdns.py)."""
    from datetime import UTC, datetime

    from .._scanid import new_scan_id
    from .._version import __version__
    from ..config import ScanConfig
    from ..errors import TargetSpecError
    from ..targets import parse_targets

    keep = ("exclude", "exclude_file", "input_file", "family", "dns_servers", "output")
    resolve = "never" if options.get("resolve") == "never" else "all"
    cfg = ScanConfig(targets=tuple(targets), resolve=resolve, list_only=True,
                     **{k: options[k] for k in keep if options.get(k)})
    tset = parse_targets(list(cfg.targets), exclude=list(cfg.exclude) or None,
                         exclude_file=cfg.exclude_file, input_file=cfg.input_file,
                         family=cfg.family)
    if not tset:
        raise TargetSpecError("no targets to list", hint="name hosts, e.g. 198.51.100.0/24")
    t0, started = time.monotonic(), datetime.now(UTC)
    scan_id = new_scan_id()
    addrs = list(tset)
    given = [tset.hostname(a) for a in addrs]
    found: dict[str, HostName] = {}
    took = 0.0
    if resolve == "all":
        # Forward confirmation only fills the result's ``confirmed``: the text does not
        # show it, so without a result it is not asked for (half the queries).
        found, took = lookup(cfg, addrs, confirm=result)
    res = _list_result(cfg, scan_id, started, addrs, given, found, took, t0) \
        if result else None
    n = len(addrs)
    lines = [f"prtip-nb {__version__} list scan {scan_id}"]
    for host, user in zip(addrs, given, strict=True):
        # The hosts table's rule (results._hostnames.merge_names): a name the user gave
        # stands; else the PTR name.
        hit = found.get(host)
        name = user or (hit.name if hit is not None else None)
        lines.append(f"Scan report for {f'{name} ({host})' if name else host}")
    lines.append(f"Done: {n} IP address{'' if n == 1 else 'es'} (0 hosts up) scanned in "
                 f"{time.monotonic() - t0:.2f} s.")
    return res, "\n".join(lines) + "\n"


def _list_result(cfg: ScanConfig, scan_id: str, started: datetime, addrs: list[str],
                 given: list[str | None], found: dict[str, HostName], took: float, t0: float
                 ) -> Any:
    """The -sL ScanResult (hosts "unknown", "user-set"), its names merged in."""
    from datetime import UTC, datetime

    from ..results import ResultBuilder, ScanMeta, schema
    from ..results import _convert as cv
    from .checkpoint import public_config

    meta = ScanMeta(scan_id=scan_id, config=public_config(cfg.to_json()),
                    started=started)
    builder = ResultBuilder(meta, sink=cfg.output)
    n = len(addrs)
    hosts = cv.table({
        "host": addrs, "hostname": given,
        "family": [6 if ":" in a else 4 for a in addrs], "state": ["unknown"] * n,
        "reason": ["user-set"] * n, **{c: [0] * n for c in ("open", "closed", "filtered", "other")},
    }, schema.file_schema("hosts"))
    if cfg.resolve == "all":
        record(builder, found, took, time.monotonic() - t0)
    return builder.finish(ended=datetime.now(UTC), hosts=hosts)
