"""The index space of a scan: the integers ``[0, hosts × ports)``, shuffled and sharded.

Target order, progress, resume (a position) and sharding (every n-th position) all reduce to
one integer, so nothing per target is ever materialised. Index ``j`` is host ``j % H``,
port ``j // H``: consecutive indices visit different hosts (masscan's order), which spreads
the load of a scan across targets.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator

import numpy as np

from prtip_nb.errors import ConfigError
from prtip_nb.targets.hosts import TargetSet
from prtip_nb.targets.permutation import Permutation, U64Array
from prtip_nb.targets.ports import PortSet

__all__ = ["Permutation", "TargetSpace", "iter_batches", "join_index", "parse_shard",
           "shard_len", "shard_position", "shard_range", "split_index", "sub_shard_start",
           "sub_shards"]

_SHARD_HINT = "valid form: k/n with 1 <= k <= n, like 2/4 (the second of four shards)"
_SHARD = re.compile(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*")


class TargetSpace:
    """Targets × ports as one integer range; ``size`` may exceed 2**63, so prefer it to len()."""

    __slots__ = ("targets", "ports", "hosts", "size")

    def __init__(self, targets: TargetSet, ports: PortSet) -> None:
        self.targets = targets
        self.ports = ports
        self.hosts = targets.size
        self.size = targets.size * len(ports)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"TargetSpace({self.hosts} hosts × {len(self.ports)} ports = {self.size})"

    def locate(self, j: int) -> tuple[int, int]:
        """``(host_index, port_index)`` of index ``j``."""
        j = operator.index(j)
        if not 0 <= j < self.size:
            raise IndexError(f"index {j} out of range for a space of {self.size}")
        return j % self.hosts, j // self.hosts

    def probe(self, j: int) -> tuple[str, int, str, int]:
        """``(address, family, proto, port)`` of index ``j``."""
        host, port_index = self.locate(j)
        proto, port = self.ports[port_index]
        return self.targets.address(host), self.targets.family(host), proto, port


def _check_shard(k: object, n: object) -> tuple[int, int]:
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (k, n))
    if not ok or not 1 <= k <= n:  # type: ignore[operator]
        raise ConfigError(f"bad shard {k}/{n}", token=f"{k}/{n}", hint=_SHARD_HINT)
    return k, n  # type: ignore[return-value]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: the second of four shards (masscan's ``--shard``)."""
    m = _SHARD.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ConfigError(f"bad shard {text!r}", token=str(text), hint=_SHARD_HINT)
    return _check_shard(int(m[1]), int(m[2]))


def shard_range(size: int, k: int, n: int) -> range:
    """Indices of shard ``k`` of ``n`` (1-based): ``range(k - 1, size, n)``.

    The ``n`` shards partition ``[0, size)``. For sizes above 2**63 ``len()`` of the range
    overflows; slicing and iteration still work.
    """
    k, n = _check_shard(k, n)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"bad space size {size!r}", token=repr(size))
    return range(k - 1, size, n)


def shard_len(size: int, shard: tuple[int, int], start: int = 0) -> int:
    """Positions of shard ``k/n`` (indices k-1, k-1+n, ...) of a space of ``size`` indices,
    from position ``start`` on: the one place this arithmetic is written."""
    k, n = shard
    return max(0, (size - k + n) // n - start)


def split_index(js: np.ndarray, n_hosts: int) -> tuple[np.ndarray, np.ndarray]:
    """(host index, port index) of scan indices ``js``: host ``j % H``, port ``j // H``
    (the layout above), in ``js``'s dtype. ``join_index`` is its inverse."""
    n = js.dtype.type(n_hosts)
    q = js // n  # ``js - q * n``, not ``js % n``: numpy divides by a scalar with libdivide,
    return js - q * n, q  # its remainder loop divides each element (~2.5x slower)


def join_index(host: np.ndarray, port_index: np.ndarray, n_hosts: int) -> np.ndarray:
    """Scan indices (uint64) of ``(host, port index)`` pairs: ``port_index · H + host``."""
    return port_index.astype(np.uint64) * np.uint64(n_hosts) + host.astype(np.uint64)


def shard_position(i: np.ndarray, shard: tuple[int, int]) -> np.ndarray:
    """Positions within shard ``k/n`` of unshuffled indices ``i`` (uint64) of that shard."""
    k, n = shard
    return (i - np.uint64(k - 1)) // np.uint64(n)


def sub_shards(shard: tuple[int, int], parts: int) -> list[tuple[int, int]]:
    """Split shard k/n into ``parts`` shards that partition it exactly (part w holds the
    parent's positions w, w + parts, ...): transmit threads and worker processes."""
    k, n = shard
    return [(k + n * w, n * parts) for w in range(parts)]


def sub_shard_start(start: int, w: int, parts: int) -> int:
    """Where sub-shard ``w`` begins when its parent shard resumes at position ``start``:
    its position ceil((start - w) / parts)."""
    return max(0, -(-(start - w) // parts))


def iter_batches(
    space: TargetSpace,
    perm: Permutation,
    *,
    shard: tuple[int, int] = (1, 1),
    start: int = 0,
    batch: int = 4096,
) -> Iterator[U64Array]:
    """Permuted indices of ``shard`` as uint64 arrays of at most ``batch``, in scan order.

    ``start`` counts positions within the shard, so a scan resumes by passing the number of
    positions it has already sent. Arguments are checked now, not at the first ``next()``.
    """
    k, n = _check_shard(*shard)
    if perm.size != space.size:
        raise ConfigError(
            f"the permutation covers {perm.size} indices but the space has {space.size}",
            token=str(perm.size),
            hint="build it as Permutation(space.size, seed)",
        )
    if space.size > 1 << 64:
        raise ConfigError(
            f"a scan space of {space.size} probes does not fit in uint64",
            token=str(space.size),
            hint="narrow the IPv6 prefix or the port list",
        )
    for name, value, low in (("start", start, 0), ("batch", batch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(
                f"bad {name}={value!r}", token=repr(value), hint=f"valid form: an integer >= {low}"
            )
    first = k - 1 + start * n
    # Positions in the shard from `start` on; computed, because len(range) caps at 2**63.
    count = shard_len(space.size, (k, n), start)
    return _batches(perm, first, n, count, batch)


def _batches(
    perm: Permutation, first: int, step: int, count: int, batch: int
) -> Iterator[U64Array]:
    for done in range(0, count, batch):
        idx = np.arange(min(batch, count - done), dtype=np.uint64)
        idx *= np.uint64(step)
        idx += np.uint64(first + done * step)
        yield perm.shuffle_array(idx)
