"""A cheap OS hint without -O: the initial TTL of the replies a scan already has (pure).

No probe is sent. A reply's TTL rounded up to 32, 64, 128 or 255 is the sender's initial
TTL, and the difference is the hop count; initial TTLs group stacks coarsely (64: Linux,
BSDs, macOS; 128: Windows; 255: network devices, Solaris/AIX; 32: old Windows and
embedded). This is a hint, not a fingerprint: a sysctl (``net.ipv4.ip_default_ttl``)
changes it, and only -O tells stacks apart. The TCP window of the SYN-ACK would sharpen it;
the scan's receive path does not keep it yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .fingerprint import ttl_guess

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FAMILIES", "passive_guess"]

FAMILIES = {
    32: "old Windows or embedded",
    64: "Linux, BSD, macOS or another Unix-like",
    128: "Windows",
    255: "network device, Solaris or AIX",
}


def passive_guess(ports: pa.Table) -> pa.Table:
    """One row per host with a reply TTL: host, ttl (the highest seen), initial_ttl, hops,
    guess. ``ports`` is a result's ports table (``res.tables["ports"]``)."""
    import pyarrow as pa

    best: dict[str, int] = {}
    cols = ports.select(["host", "ttl"]).to_pydict()
    for host, ttl in zip(cols["host"], cols["ttl"], strict=True):
        if ttl is not None and ttl > best.get(host, -1):
            best[host] = ttl
    hosts = sorted(best)
    initial = [ttl_guess(best[h]) for h in hosts]
    return pa.table({
        "host": pa.array(hosts, pa.string()),
        "ttl": pa.array([best[h] for h in hosts], pa.uint8()),
        "initial_ttl": pa.array(initial, pa.uint8()),
        "hops": pa.array([i - best[h] + 1 for i, h in zip(initial, hosts, strict=True)],
                         pa.uint8()),
        "guess": pa.array([FAMILIES[i] for i in initial], pa.string()),
    })
