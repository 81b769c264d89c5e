"""Port sets and nmap's ``-p`` grammar.

A :class:`PortSet` is two tuples of merged inclusive ranges, one per protocol, so ``-p-`` is
one tuple whatever the scan size. Index order is every TCP port ascending, then every UDP
port ascending; :meth:`PortSet.__getitem__` finds a port by bisecting cumulative counts.
"""

from __future__ import annotations

import functools
import operator
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prtip_nb.errors import PortSpecError
from prtip_nb.targets.intervals import Interval, merge, total
from prtip_nb.targets.toplist import PROTOS, _check_proto, top_ports_list

__all__ = ["PortSet", "parse_ports", "top_ports"]

MAX_PORT = 65535
DEFAULT_TOP = 1000  # nmap's default when no -p is given
_EXPECTED = "expected a number 0-65535, a range like 1-1024, or '-' for all ports"
_HINT = "valid form: 22,80,443 or 1-1024 or -1024 or 60000- or - (all) or T:80,U:53"
# At most 5 digits: it bounds int() on hostile input, and 65536-99999 get their own message.
_NUMBER = re.compile(r"[0-9]{1,5}")
_PREFIXED = re.compile(r"([A-Za-z]):(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PortSet:
    """An immutable set of (protocol, port) pairs held as sorted, merged ranges.

    The constructor normalises: ``PortSet(tcp=((80, 80), (22, 23)))`` is stored as
    ``((22, 23), (80, 80))``. ``len()`` is the number of (proto, port) pairs.
    """

    tcp: tuple[Interval, ...] = ()
    udp: tuple[Interval, ...] = ()
    # (proto, first, last) for tcp then udp, and the index of each range's first port.
    _flat: tuple[tuple[str, int, int], ...] = field(init=False, repr=False, compare=False)
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        flat: list[tuple[str, int, int]] = []
        for proto in PROTOS:
            ranges = merge(_checked_range(r) for r in getattr(self, proto))
            object.__setattr__(self, proto, ranges)
            flat.extend((proto, lo, hi) for lo, hi in ranges)
        starts, n = [], 0
        for _, lo, hi in flat:
            starts.append(n)
            n += hi - lo + 1
        object.__setattr__(self, "_flat", tuple(flat))
        object.__setattr__(self, "_starts", tuple(starts))
        object.__setattr__(self, "_size", n)

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, i: int) -> tuple[str, int]:
        i = operator.index(i)
        if i < 0:
            i += self._size
        if not 0 <= i < self._size:
            raise IndexError(f"port index {i} out of range for {self._size} ports")
        r = bisect_right(self._starts, i) - 1
        proto, lo, _ = self._flat[r]
        return proto, lo + i - self._starts[r]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for proto, lo, hi in self._flat:
            for port in range(lo, hi + 1):
                yield proto, port

    def __contains__(self, item: object) -> bool:
        if not (isinstance(item, tuple) and len(item) == 2) or item[0] not in PROTOS:
            return False
        ranges: tuple[Interval, ...] = getattr(self, item[0])
        r = bisect_right(ranges, (item[1], MAX_PORT + 1)) - 1
        return r >= 0 and ranges[r][0] <= item[1] <= ranges[r][1]

    def count(self, proto: str) -> int:
        """Number of ports for ``proto`` ('tcp' or 'udp')."""
        return total(getattr(self, _check_proto(proto)))

    @property
    def protos(self) -> tuple[str, ...]:
        """The protocols that have at least one port, tcp first."""
        return tuple(p for p in PROTOS if getattr(self, p))

    def to_spec(self) -> str:
        """Canonical nmap form, e.g. ``T:22,80-85,U:53``; ``parse_ports`` reads it back."""
        parts = []
        for proto in self.protos:
            body = ",".join(
                str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in getattr(self, proto)
            )
            parts.append(f"{proto[0].upper()}:{body}")
        return ",".join(parts)


def _checked_range(r: Interval) -> Interval:
    lo, hi = r
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_PORT:
            raise PortSpecError(f"bad port {v!r}: ports are 0-{MAX_PORT}", token=repr(v))
    if lo > hi:
        raise PortSpecError(f"reversed port range {lo}-{hi}", token=f"{lo}-{hi}")
    return lo, hi


def top_ports(n: int, proto: str = "tcp", *, source: str = "builtin") -> PortSet:
    """The ``n`` most common ports of ``proto`` from the ranking ``source``.

    ``source="builtin"`` is the project's own ranking (``prtip_nb/data``); ``"nmap"`` reads an
    installed nmap's ``nmap-services`` at run time and ranks by its open-frequency column.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise PortSpecError(
            f"top_ports={n!r} is not an integer", token=repr(n), hint="valid form: top_ports=100"
        )
    return _top_portset(n, _check_proto(proto), source)


# parse_ports() with no spec is the common call; building the 1000-port set once is enough.
@functools.lru_cache(maxsize=64)
def _top_portset(n: int, proto: str, source: str) -> PortSet:
    ports = top_ports_list(n, proto, source=source)
    return PortSet(**{proto: tuple((p, p) for p in ports)})


def parse_ports(
    spec: str | int | Iterable[int] | PortSet | None = None,
    *,
    top_ports: int | None = None,
    default_proto: str = "tcp",
) -> PortSet:
    """Parse an nmap ``-p`` specification (or ``--top-ports N``) into a :class:`PortSet`.

    Grammar, comma-separated (whitespace around commas is allowed):

    - ``22`` one port; ``0`` is allowed only when written explicitly.
    - ``80-85`` an inclusive range; ``-1024`` means 1-1024; ``60000-`` means 60000-65535.
    - ``-`` every port 1-65535 (nmap's ``-p-``).
    - ``T:`` / ``U:`` (any case) set the protocol of the items after them, until the next
      prefix: ``U:53,111,T:21-25,80``. Items before any prefix use ``default_proto``.

    With neither ``spec`` nor ``top_ports`` the result is the top 1000 ports of
    ``default_proto`` (nmap's default). An int or an iterable of ints is taken as port
    numbers of ``default_proto``; a :class:`PortSet` is returned as it is. Note that the
    string ``"-5"`` is nmap's open range 1-5, while the int ``-5`` is rejected.
    """
    proto = _check_proto(default_proto)
    if spec is not None and top_ports is not None:
        raise PortSpecError(
            f"both a port spec {spec!r} and top_ports={top_ports!r} were given",
            token=str(spec),
            hint="pick one: parse_ports('22,80') or parse_ports(top_ports=100)",
        )
    if spec is None:
        n = DEFAULT_TOP if top_ports is None else top_ports
        if isinstance(n, bool) or not isinstance(n, int):
            raise PortSpecError(
                f"top_ports={n!r} is not an integer", token=repr(n), hint="valid form: 100"
            )
        return _top_portset(n, proto, "builtin")
    if isinstance(spec, PortSet):
        return spec
    if isinstance(spec, str):
        return _parse_text(spec, proto)
    if isinstance(spec, int) and not isinstance(spec, bool):
        return _from_ints([spec], proto)
    if isinstance(spec, Iterable):
        return _from_ints(spec, proto)
    raise PortSpecError(
        f"unsupported port spec {spec!r} of type {type(spec).__name__}",
        token=repr(spec),
        hint="pass a string like '22,80-85', an int, or a list of ints",
    )


def _from_ints(values: Iterable[object], proto: str) -> PortSet:
    ports: list[Interval] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_PORT:
            raise PortSpecError(
                f"bad port {v!r}: expected an integer 0-{MAX_PORT}", token=repr(v), hint=_HINT
            )
        ports.append((v, v))
    if not ports:
        raise PortSpecError("empty port list []", token="[]", hint=_HINT)
    return PortSet(**{proto: tuple(ports)})


def _parse_text(spec: str, default_proto: str) -> PortSet:
    if not spec.strip():
        raise PortSpecError(f"empty port specification {spec!r}", token=spec, hint=_HINT)
    found: dict[str, list[Interval]] = {p: [] for p in PROTOS}
    proto = default_proto
    for raw in spec.split(","):
        item = raw.strip()
        m = _PREFIXED.fullmatch(item)
        if m:
            letter = m[1].upper()
            if letter not in ("T", "U"):
                raise PortSpecError(
                    f"unknown protocol prefix '{m[1]}:' in {spec!r}",
                    token=item,
                    hint="valid form: T:22,80 for TCP, U:53 for UDP (S: SCTP and P: IP protocols "
                    "are not supported)",
                )
            proto = "tcp" if letter == "T" else "udp"
            item = m[2].strip()
            if not item:
                raise PortSpecError(
                    f"protocol prefix {raw.strip()!r} in {spec!r} has no ports after it",
                    token=raw.strip(),
                    hint="valid form: T:22,80 or U:53,161",
                )
        if not item:
            raise PortSpecError(f"empty port entry {raw!r} in {spec!r}", token=raw, hint=_HINT)
        found[proto].append(_parse_item(item, spec))
    return PortSet(tcp=tuple(found["tcp"]), udp=tuple(found["udp"]))


def _parse_item(item: str, spec: str) -> Interval:
    if item == "-":
        return 1, MAX_PORT
    lo_s, dash, hi_s = item.partition("-")
    if not dash:
        n = _number(item, item, spec)
        return n, n
    # nmap's open ranges start at 1, not 0: port 0 is scanned only when named.
    lo = 1 if lo_s == "" else _number(lo_s, item, spec)
    hi = MAX_PORT if hi_s == "" else _number(hi_s, item, spec)
    if lo > hi:
        raise PortSpecError(
            f"reversed port range {item!r} in {spec!r}: the first port must not exceed the last",
            token=item,
            hint=f"valid form: {hi}-{lo}" if lo_s and hi_s else _HINT,
        )
    return lo, hi


def _number(text: str, item: str, spec: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise PortSpecError(f"bad port {item!r} in {spec!r}: {_EXPECTED}", token=item, hint=_HINT)
    n = int(text)
    if n > MAX_PORT:
        raise PortSpecError(
            f"port {text} in {spec!r} is out of range: ports are 0-{MAX_PORT}",
            token=item,
            hint=_HINT,
        )
    return n
