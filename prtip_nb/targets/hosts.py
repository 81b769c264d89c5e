"""Target sets and ``parse_targets``: nmap's target grammar, -iL files and exclusions.

A :class:`TargetSet` is a tuple of merged ``(family, first, last)`` integer ranges, so a /8
or an IPv6 /64 costs one tuple. Address ``i`` is found by bisecting cumulative counts.
"""

from __future__ import annotations

import operator
import os
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prtip_nb.errors import ConfigError, TargetSpecError
from prtip_nb.targets import addrspec
from prtip_nb.targets.addrspec import HINT, NameSpec, Range3, format_addr, parse_ip
from prtip_nb.targets.intervals import Interval, merge, subtract
from prtip_nb.targets.resolve import NameCache, Resolver, default_resolver

__all__ = ["Resolver", "TargetSet", "default_resolver", "parse_targets"]

_LOOPBACK = {4: (0x7F000000, 0x7FFFFFFF), 6: (1, 1)}  # 127.0.0.0/8 and ::1
_NO_TARGETS = "no targets: name at least one target; prtip_nb never scans by default"


class TargetSet:
    """An immutable set of IPv4 and IPv6 addresses, held as merged integer ranges.

    ``len()`` works only below 2**63 (a Python limit); use :attr:`size` for any set. An empty
    set is falsy. Address order is every IPv4 range ascending, then every IPv6 range.
    """

    __slots__ = ("_ranges", "_starts", "_size", "_names")

    def __init__(
        self, ranges: Iterable[Range3] = (), hostnames: Mapping[str, str] | None = None
    ) -> None:
        per_family: dict[int, list[Interval]] = {4: [], 6: []}
        for fam, first, last in ranges:
            limit = (1 << addrspec.BITS[fam]) - 1
            if not 0 <= first <= last <= limit:
                raise ValueError(f"bad IPv{fam} range ({first}, {last})")
            per_family[fam].append((first, last))
        self._ranges = tuple((fam, lo, hi) for fam in (4, 6) for lo, hi in merge(per_family[fam]))
        starts, n = [], 0
        for _, lo, hi in self._ranges:
            starts.append(n)
            n += hi - lo + 1
        self._starts = tuple(starts)
        self._size = n
        self._names: dict[tuple[int, int], str] = {}
        for addr, name in (hostnames or {}).items():
            key = parse_ip(addr)
            if key is not None and self._find(*key):
                self._names.setdefault(key, name)

    @property
    def ranges(self) -> tuple[Range3, ...]:
        """``(family, first_int, last_int)`` ranges, sorted, merged, IPv4 first."""
        return self._ranges

    @property
    def size(self) -> int:
        """Number of addresses (a Python int: an IPv6 /64 is 2**64)."""
        return self._size

    @property
    def families(self) -> set[int]:
        return {fam for fam, _, _ in self._ranges}

    @property
    def has_hostnames(self) -> bool:
        """True when some address came from a name (``hostname`` can return one)."""
        return bool(self._names)

    @property
    def starts(self) -> tuple[int, ...]:
        """Index of the first address of each of ``ranges`` (for vectorised lookups)."""
        return self._starts

    @property
    def is_loopback(self) -> bool:
        """True when every address is in 127.0.0.0/8 or is ::1 (False when empty)."""
        return bool(self._ranges) and all(
            _LOOPBACK[fam][0] <= lo and hi <= _LOOPBACK[fam][1] for fam, lo, hi in self._ranges
        )

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        # Without this, bool() calls __len__, which overflows above 2**63 addresses.
        return self._size > 0

    def _locate(self, i: int) -> tuple[int, int]:
        i = operator.index(i)
        if i < 0:
            i += self._size
        if not 0 <= i < self._size:
            raise IndexError(f"host index {i} out of range for {self._size} addresses")
        r = bisect_right(self._starts, i) - 1
        fam, lo, _ = self._ranges[r]
        return fam, lo + i - self._starts[r]

    def address(self, i: int) -> str:
        """IP text of address ``i``."""
        return format_addr(*self._locate(i))

    def family(self, i: int) -> int:
        """4 or 6."""
        return self._locate(i)[0]

    def packed(self, i: int) -> bytes:
        """Address ``i`` in network byte order: 4 or 16 bytes, for raw packets."""
        fam, value = self._locate(i)
        return value.to_bytes(4 if fam == 4 else 16, "big")

    def hostname(self, addr: str) -> str | None:
        """The name from the spec that resolved to ``addr``, or None."""
        key = parse_ip(addr)
        return None if key is None else self._names.get(key)

    def _find(self, fam: int, value: int) -> bool:
        r = bisect_right(self._ranges, (fam, value, 1 << 128)) - 1
        return (
            r >= 0
            and self._ranges[r][0] == fam
            and self._ranges[r][1] <= value <= (self._ranges[r][2])
        )

    def __contains__(self, addr: object) -> bool:
        key = parse_ip(addr) if isinstance(addr, str) else None
        return key is not None and self._find(*key)

    def __iter__(self) -> Iterator[str]:
        for fam, lo, hi in self._ranges:
            for value in range(lo, hi + 1):
                yield format_addr(fam, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TargetSet):
            return NotImplemented
        return self._ranges == other._ranges and self._names == other._names

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __repr__(self) -> str:
        shown = ", ".join(
            format_addr(f, lo) if lo == hi else f"{format_addr(f, lo)}-{format_addr(f, hi)}"
            for f, lo, hi in self._ranges[:3]
        )
        more = ", ..." if len(self._ranges) > 3 else ""
        return f"TargetSet({self._size} addresses: {shown}{more})"


def _texts(value: str | Sequence[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    tokens: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TargetSpecError(
                f"{what} must be strings, got {item!r}", token=repr(item), hint=HINT
            )
        tokens.extend(addrspec.split_specs(item))
    return tokens


#: Longest -iL line read: a target is at most a hostname (253) with a prefix. A longer line
#: is not a target list (``-iL /dev/zero`` would otherwise read until MemoryError).
MAX_LINE = 4096
#: Largest -iL file read (about 4 million IPv4 addresses, one a line).
MAX_BYTES = 64 << 20
_FILE_HINT = "pass the path of a text file with targets separated by spaces or newlines"


def _read_list(path: str | os.PathLike[str] | None, flag: str) -> tuple[list[str], dict[str, int]]:
    """The tokens of a target file, and the line each first appears on (for errors).

    Streamed line by line with a bound on each line and on the whole: a device, a binary
    or a huge file fails at once with the line that is wrong, never with MemoryError."""
    if path is None:
        return [], {}
    name = os.fspath(path)
    if name == "-":
        raise TargetSpecError(
            f"{flag} '-' (standard input) is not supported",
            token="-",
            hint="write the targets to a file and pass its path",
        )

    def bad(what: str, number: int | None = None) -> TargetSpecError:
        where = f"{flag} file {name!r}" + (f", line {number}" if number else "")
        return TargetSpecError(f"{where}: {what}", token=name, hint=_FILE_HINT)

    tokens: list[str] = []
    lines: dict[str, int] = {}
    total = 0
    try:
        with open(name, "rb") as fh:
            for number, raw in enumerate(iter(lambda: fh.readline(MAX_LINE + 1), b""), 1):
                total += len(raw)
                if len(raw) > MAX_LINE:
                    raise bad(f"line longer than {MAX_LINE} bytes; this is not a target list",
                              number)
                if total > MAX_BYTES:
                    raise bad(f"larger than {MAX_BYTES:,} bytes; merge addresses into "
                              "ranges or CIDR blocks (10.0.0.0/8, 10.0.0.1-200)", number)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise bad("not UTF-8 text", number) from None
                if "\0" in text:
                    raise bad("holds a NUL byte; this is not a text file", number)
                # '#' starts a comment to the end of the line, as in nmap's -iL.
                for token in addrspec.split_specs(text.split("#", 1)[0]):
                    tokens.append(token)
                    lines.setdefault(token, number)
    except OSError as exc:
        raise TargetSpecError(f"cannot read {flag} file {name!r}: {exc.strerror or exc}",
                              token=name, hint=_FILE_HINT) from exc
    return tokens, lines


def _located(exc: TargetSpecError, lines: dict[str, int], flag: str,
             path: str | os.PathLike[str] | None) -> TargetSpecError:
    """``exc`` with the file and line of its token, when the token came from ``path``."""
    number = lines.get(exc.token or "")
    if number is None or path is None:
        return exc
    out = TargetSpecError(f"{flag} file {os.fspath(path)!r}, line {number}: {exc}",
                          token=exc.token)
    out.hint = exc.hint
    return out


def _expand(
    tokens: list[str], names: NameCache, family: int | None, *, excluding: bool
) -> tuple[list[Range3], dict[str, str]]:
    ranges: list[Range3] = []
    hostnames: dict[str, str] = {}
    for token in tokens:
        parsed = addrspec.parse_token(token)
        if isinstance(parsed, NameSpec):
            keys = names.lookup(parsed)
            # A target scans the first address (nmap's rule, IPv4 preferred); an exclusion
            # removes every address the name has, since exclusions must always win.
            if not excluding:
                keys = [next((k for k in keys if k[0] == 4), keys[0])]
            for fam, value in keys:
                ranges.append(addrspec.apply_prefix(token, fam, value, parsed.prefix))
                if not excluding:
                    hostnames.setdefault(format_addr(fam, value), parsed.name)
            continue
        for fam, first, last in parsed:
            if family is not None and fam != family:
                if excluding:
                    continue  # an exclusion of the other family cannot match anything
                flag = "-6" if fam == 6 else "-4"
                raise TargetSpecError(
                    f"IPv{fam} target {token!r} given while family={family} (-{family}) is set",
                    token=token,
                    hint=f"scan IPv{fam} targets with family={fam} ({flag}), or leave family=None",
                )
            ranges.append((fam, first, last))
    return ranges, hostnames


def parse_targets(
    targets: str | Sequence[str],
    *,
    exclude: str | Sequence[str] | None = None,
    exclude_file: str | os.PathLike[str] | None = None,
    input_file: str | os.PathLike[str] | None = None,
    family: int | None = None,
    resolver: Resolver | None = None,
) -> TargetSet:
    """Parse nmap-style targets into a :class:`TargetSet`.

    Each string may hold several targets. **Separators**: whitespace always separates
    targets. A comma separates targets too, except inside an IPv4-octet-shaped word (four
    dot-separated fields made of digits, ``,``, ``-`` and ``*``), where it is nmap's octet
    list: ``192.168.3-5,7.1`` is one target, ``10.0.0.1,2,3`` is 10.0.0.1-3, while
    ``10.0.0.1,10.0.0.9`` and ``localhost,::1`` are two targets each.

    Forms: ``192.168.0.1``; ``10.0.0.0/8`` (host bits masked: 10.1.2.3/24 is 10.1.2.0-255);
    nmap octet ranges and lists in any octet (``10.0-3.0.1-254``, ``10.0.0.-``, ``*``);
    ``10.0.0.1-10.0.0.9``; ``::1``, ``2001:db8::/64``; hostnames (optionally ``name/24``),
    each resolved once with ``resolver(name, family) -> [ip, ...]``, the first IPv4 answer
    preferred unless ``family`` is 6. ``input_file`` (-iL) and ``exclude_file`` hold the same
    grammar with ``#`` comments. Exclusions always win; an exclusion hostname removes every
    address it resolves to. ``family=4``/``6`` restricts to one family, like ``-4``/``-6``.
    """
    if family not in (None, 4, 6):
        raise ConfigError(
            f"family={family!r} is not 4, 6 or None",
            token=repr(family),
            hint="valid form: family=4 (-4), family=6 (-6), or None for both",
        )
    names = NameCache(resolver or default_resolver, family)
    from_file, lines = _read_list(input_file, "-iL")
    tokens = _texts(targets, "targets") + from_file
    if not tokens:
        where = f" (the -iL file {os.fspath(input_file)!r} is empty)" if input_file else ""
        raise TargetSpecError(_NO_TARGETS + where, token=repr(targets), hint=HINT)
    try:
        ranges, hostnames = _expand(tokens, names, family, excluding=False)
    except TargetSpecError as exc:
        raise _located(exc, lines, "-iL", input_file) from exc.__cause__
    wanted = TargetSet(ranges)

    ex_file, ex_lines = _read_list(exclude_file, "--excludefile")
    ex_tokens = _texts(exclude, "exclusions") + ex_file
    if not ex_tokens:
        return TargetSet(wanted.ranges, hostnames)
    try:
        ex_ranges, _ = _expand(ex_tokens, names, family, excluding=True)
    except TargetSpecError as exc:
        raise _located(exc, ex_lines, "--excludefile", exclude_file) from exc.__cause__
    removed = TargetSet(ex_ranges)
    kept: list[Range3] = []
    for fam in (4, 6):
        keep = tuple((lo, hi) for f, lo, hi in wanted.ranges if f == fam)
        drop = tuple((lo, hi) for f, lo, hi in removed.ranges if f == fam)
        kept.extend((fam, lo, hi) for lo, hi in subtract(keep, drop))
    if not kept:
        shown = ", ".join(repr(t) for t in ex_tokens[:5]) + (", ..." if len(ex_tokens) > 5 else "")
        raise TargetSpecError(
            f"the exclusions {shown} removed every target ({wanted.size} addresses)",
            token=" ".join(ex_tokens[:5]),
            hint="narrow the exclusions or add targets outside them",
        )
    return TargetSet(kept, hostnames)
