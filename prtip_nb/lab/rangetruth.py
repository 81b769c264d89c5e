"""The range lab's ground truth, without one object per (host, port).

A range lab answers alike on every address of its prefix, except the hosts that drop
everything. So the truth of a port list is three things: the ports open on every
answering host, the dropped hosts (as sorted address intervals) and a rule::

    state(host, port) = "filtered" if host is dropped
                        "open"     if port is open
                        "closed"   otherwise

That holds 198.18.0.0/15 x 100 ports (13.1 million cells) in a few kilobytes.
``counts()`` gives the number of cells per state, ``dropped_mask`` tests a numpy array
of addresses at once, and ``frame()`` materialises a small lab as a DataFrame (it refuses
above ``max_cells``). The states are nmap's words for a SYN scan with ``-Pn``. For UDP,
"closed" is what the kernel answers (ICMP port unreachable); under the kernel's ICMP
rate limit a scanner may rightly say ``open|filtered`` instead (see RangeLab's knobs).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["Net", "RangeTruth"]

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RangeTruth:
    """What a perfect ``-Pn`` scan of a range lab reports for ``ports`` over ``proto``."""

    prefixes: tuple[Net, ...]
    ports: tuple[int, ...]
    proto: str
    open_ports: frozenset[int]
    dropped: tuple[Net, ...]  # collapsed, sorted by family then address

    @classmethod
    def build(cls, prefixes: Sequence[Net], ports: Iterable[int], proto: str,
              listening: Iterable[int], dropped: Iterable[Net]) -> RangeTruth:
        ports_t = tuple(int(p) for p in ports)
        bad = [p for p in ports_t if not 0 < p < 65536]
        if bad:
            raise ValueError(f"ports must be 1-65535; got {bad[:5]}")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"proto must be 'tcp' or 'udp', not {proto!r}")
        nets = list(dropped)
        merged: list[Net] = [
            *ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network)),
            *ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))]
        return cls(tuple(prefixes), ports_t, proto, frozenset(listening) & set(ports_t),
                   tuple(merged))

    # -- the rule ------------------------------------------------------------------------
    def is_dropped(self, host: str) -> bool:
        """True if ``host`` drops everything (O(log n) in the number of dropped ranges)."""
        ip = ipaddress.ip_address(host)
        starts, ends = self._intervals(ip.version)
        i = bisect.bisect_right(starts, int(ip)) - 1
        return i >= 0 and int(ip) <= ends[i]

    def state(self, host: str, port: int) -> str:
        """nmap's state for (``host``, ``port``): open, closed or filtered."""
        ip = ipaddress.ip_address(host)
        if not any(ip in net for net in self.prefixes):
            raise ValueError(f"{host} is not in the lab's prefixes "
                             f"({', '.join(map(str, self.prefixes))})")
        if self.is_dropped(host):
            return "filtered"
        return "open" if port in self.open_ports else "closed"

    # -- aggregates ----------------------------------------------------------------------
    @property
    def prefix(self) -> ipaddress.IPv4Network:
        """The IPv4 prefix: the one ``counts``, ``frame`` and ``hosts`` enumerate."""
        for net in self.prefixes:
            if isinstance(net, ipaddress.IPv4Network):
                return net
        raise ValueError("this lab has no IPv4 prefix")

    @property
    def n_dropped(self) -> int:
        """Dropped addresses inside the IPv4 prefix."""
        return sum(n.num_addresses for n in self.dropped
                   if isinstance(n, ipaddress.IPv4Network) and n.subnet_of(self.prefix))

    def counts(self) -> dict[str, int]:
        """Cells per state over the IPv4 prefix x ``ports``."""
        hosts, dropped, n_open = self.prefix.num_addresses, self.n_dropped, len(self.open_ports)
        answering = hosts - dropped
        return {"open": answering * n_open, "closed": answering * (len(self.ports) - n_open),
                "filtered": dropped * len(self.ports)}

    def dropped_hosts(self) -> list[str]:
        """Every dropped IPv4 address, in order (as big as the dropped set)."""
        return [str(a) for n in self.dropped if n.version == 4 for a in n]

    def dropped_mask(self, addrs: np.ndarray) -> np.ndarray:
        """For a uint32 array of IPv4 addresses (host order), which are dropped."""
        import numpy as np

        starts, ends = self._intervals(4)
        a = np.asarray(addrs, dtype=np.uint32).astype(np.int64)
        i = np.searchsorted(np.asarray(starts, dtype=np.int64), a, side="right") - 1
        ok = i >= 0
        return ok & (a <= np.asarray(ends + [-1], dtype=np.int64)[np.where(ok, i, -1)])

    def frame(self, hosts: Sequence[str] | None = None, *,
              max_cells: int = 1 << 20) -> pd.DataFrame:
        """host, port, state for ``hosts`` (default: the IPv4 prefix) x ports, host-major.

        Refuses above ``max_cells``: use ``counts``, ``state`` or ``dropped_mask`` for a
        large lab instead.
        """
        import pandas as pd

        n_hosts = len(hosts) if hosts is not None else self.prefix.num_addresses
        cells = n_hosts * len(self.ports)
        if cells > max_cells:
            raise ValueError(f"{n_hosts} hosts x {len(self.ports)} ports is {cells:,} cells, "
                             f"over max_cells={max_cells:,}: use counts(), state() or "
                             "dropped_mask() for a lab this size, or pass fewer hosts")
        names = list(hosts) if hosts is not None else [str(a) for a in self.prefix]
        rows = [(h, p, self.state(h, p)) for h in names for p in self.ports]
        return pd.DataFrame(rows, columns=["host", "port", "state"])

    def _intervals(self, version: int) -> tuple[list[int], list[int]]:
        nets = [n for n in self.dropped if n.version == version]
        return ([int(n.network_address) for n in nets],
                [int(n.broadcast_address) for n in nets])

    def __repr__(self) -> str:
        info: dict[str, Any] = {"prefixes": [str(p) for p in self.prefixes],
                                "proto": self.proto, "ports": len(self.ports),
                                "open": sorted(self.open_ports),
                                "dropped": len(self.dropped)}
        return f"RangeTruth({', '.join(f'{k}={v!r}' for k, v in info.items())})"
