"""The range lab's ground truth, without one object per (host, port).

A range lab answers alike on every address of its prefix, except the hosts that drop
everything. So the truth of a port list is three things: the ports open on every
answering host, the dropped hosts (as sorted address intervals) and a rule::

    state(host, port) = "filtered" if host is dropped
                        "open"     if port is open
                        "closed"   otherwise

That holds 198.18.0.0/15 x 100 ports (13.1 million cells) in a few kilobytes.
``counts()`` gives the number of cells per state, ``dropped_mask`` tests a numpy array
of addresses at once, ``check(ports)`` scores a scan's rows against the truth
(vectorised), and ``frame()`` materialises a small lab as a DataFrame (it refuses above
``max_cells``). The states are nmap's words for a SYN scan with ``-Pn``. For UDP,
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

    def check(self, ports: Any) -> dict[str, int]:
        """Compare a scan's ``ports`` rows (a DataFrame or Arrow table with host, port and
        state; IPv4 hosts of the prefix) with the truth, vectorised: 13M rows in seconds.

        Returns counts: ``rows``; ``wrong`` (state differs from the truth, or host outside
        the prefix); ``duplicates`` (a (host, port) seen again); ``open_found`` and
        ``open_expected`` over ``ports``; ``missing_open`` (= expected - correct opens).
        A scan is exact when wrong, duplicates and missing_open are all 0.
        """
        import numpy as np
        import pyarrow as pa

        table = ports if isinstance(ports, pa.Table) else pa.Table.from_pandas(
            ports[["host", "port", "state"]], preserve_index=False)
        table = table.select(["host", "port", "state"])
        keys, right, opens, open_keys = [], 0, 0, []
        # 1M rows at a time: the dotted quads split into 4M small strings per chunk.
        for batch in table.to_batches(max_chunksize=1 << 20):
            addr, port, code = self._decode(batch)
            key = addr.astype(np.uint64) << np.uint64(16) | port.astype(np.uint64)
            inside = (addr >= int(self.prefix.network_address)) & (
                addr <= int(self.prefix.broadcast_address))
            is_open = np.isin(port, np.fromiter(self.open_ports, np.int64, len(self.open_ports)))
            want = np.where(self.dropped_mask(addr), 2, np.where(is_open, 0, 1))
            ok = inside & (code == want)
            keys.append(key)
            right += int(np.count_nonzero(ok))
            opens += int(np.count_nonzero(code == 0))
            open_keys.append(key[ok & (code == 0)])
        n = sum(len(k) for k in keys)
        dups = _repeats(keys)
        del keys
        open_right = int(sum(len(k) for k in open_keys)) - _repeats(open_keys)
        expected = self.counts()["open"]
        return {"rows": n, "wrong": n - right, "duplicates": dups, "open_found": opens,
                "open_expected": expected, "missing_open": expected - open_right}

    @staticmethod
    def _decode(batch: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint32 address, port, state code 0 open / 1 closed / 2 filtered / 3 other)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        hosts = batch.column(0).cast(pa.string())
        if pc.any(pc.match_substring(hosts, ":")).as_py():
            raise ValueError("check() takes IPv4 rows only; filter IPv6 hosts out first")
        # Dotted quads to uint32 without a Python object per row.
        quad = np.asarray(pc.list_flatten(pc.split_pattern(hosts, ".")).cast(pa.uint32()))
        quad = quad.reshape(-1, 4)
        addr = (quad[:, 0] << 24) | (quad[:, 1] << 16) | (quad[:, 2] << 8) | quad[:, 3]
        port = np.asarray(batch.column(1).cast(pa.int64()))
        states = batch.column(2)
        if not pa.types.is_dictionary(states.type):
            states = pc.dictionary_encode(states.cast(pa.string()))
        lut = np.array([{"open": 0, "closed": 1, "filtered": 2}.get(str(v), 3)
                        for v in states.dictionary.to_pylist()] or [3], np.int8)
        idx = states.indices
        code = lut[np.asarray(idx.fill_null(0))]
        if idx.null_count:
            code[np.asarray(idx.is_null())] = 3
        return addr, port, code

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


def _repeats(chunks: list[np.ndarray]) -> int:
    """How many keys repeat an earlier one. A sort, not np.unique: numpy 2's hash-based
    unique took 5 s for 3.3M uint64 keys here, the sort 0.2 s."""
    import numpy as np

    if not chunks:
        return 0
    keys = np.sort(np.concatenate(chunks))
    return int(np.count_nonzero(keys[1:] == keys[:-1]))

