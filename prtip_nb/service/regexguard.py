"""Guards against catastrophic regexes: a static check, and hostile inputs to time them with.

A service reply is attacker-controlled. The bound that holds whatever the input is the
matcher's per-search timeout (``matcher.RULE_TIMEOUT_S``, the ``regex`` module's); these
guards come first and keep rules that would hit it out of the database (Python's ``re``,
which the parse tree below comes from, has no timeout at all):

1. no regex ever sees more than ``REGEX_WINDOW`` (4 KiB) of a reply (servicedb);
2. ``risk()`` rejects the shapes that backtrack exponentially: a repeated group that holds
   another repeat which is not delimited (``(a+)+``, ``(\\w+\\s?)*``, and small repeats
   whose product is large: ``(a{1,8}){1,8}$``), and a repeated
   alternation whose branches can start alike (``(?:\\r\\n|.)*``). It walks the parse tree of
   ``re._parser`` (CPython's own parser), so it judges exactly what ``re`` will run.
   Atomic groups and possessive repeats never backtrack and are exempt;
3. ``worst_time()`` measures a compiled regex on ``hostile_inputs()`` (repetitions of the
   pattern's own literals and of character classes, at the window size); the tests hold
   every shipped rule under 50 ms, and the nmap loader can drop slower ones on request
   (``measure=``).
"""

from __future__ import annotations

import re
import re._constants as C  # noqa: N812  (the parser's opcodes)
import re._parser as P  # noqa: N812
import time
from collections.abc import Iterable
from typing import Any

from .servicedb import REGEX_WINDOW

ALL = frozenset(range(256))
_DIGIT = frozenset(b"0123456789")
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SPACE = frozenset(b" \t\n\r\f\v")
_CATEGORIES = {
    C.CATEGORY_DIGIT: _DIGIT, C.CATEGORY_NOT_DIGIT: ALL - _DIGIT,
    C.CATEGORY_WORD: _WORD, C.CATEGORY_NOT_WORD: ALL - _WORD,
    C.CATEGORY_SPACE: _SPACE, C.CATEGORY_NOT_SPACE: ALL - _SPACE,
}  # fmt: skip
_REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT)
#: A repeat allowing more than this many iterations counts as "big" (can blow up).
BIG = 8
#: Nested small repeats may offer this many ways to split a run per start position (about
#: a million steps over a 4 KiB window, a few ms): (a{1,2}){1,8} has 256, (a{1,8}){1,8} 8**8.
BIG_WAYS = 256


class _Risk(Exception):
    pass


def _fold(chars: frozenset[int], icase: bool) -> frozenset[int]:
    if not icase:
        return chars
    extra = {c ^ 0x20 for c in chars if 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A}
    return chars | extra


def _in_set(items: list[tuple[Any, Any]]) -> frozenset[int]:
    chars: set[int] = set()
    negate = False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            chars.add(av)
        elif op is C.RANGE:
            chars.update(range(av[0], av[1] + 1))
        elif op is C.CATEGORY:
            chars |= _CATEGORIES.get(av, ALL)
        else:
            return ALL
    return ALL - chars if negate else frozenset(chars)


class _Tree:
    def __init__(self, flags: int) -> None:
        self.icase = bool(flags & re.IGNORECASE)
        self.dotall = bool(flags & re.DOTALL)

    def atom(self, op: Any, av: Any) -> frozenset[int] | None:
        """Characters one single-character element matches; None if it is not one."""
        if op is C.LITERAL:
            return _fold(frozenset((av,)), self.icase)
        if op is C.NOT_LITERAL:
            return ALL - _fold(frozenset((av,)), self.icase)
        if op is C.IN:
            return _fold(_in_set(av), self.icase)
        if op is C.ANY:
            return ALL if self.dotall else ALL - {10}
        return None

    def nullable(self, seq: Iterable[tuple[Any, Any]]) -> bool:
        for op, av in seq:
            if self.atom(op, av) is not None:
                return False
            if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
                if av[0] > 0 and not self.nullable(av[2]):
                    return False
            elif op is C.SUBPATTERN:
                if not self.nullable(av[3]):
                    return False
            elif op is C.ATOMIC_GROUP:
                if not self.nullable(av):
                    return False
            elif op is C.BRANCH:
                if not any(self.nullable(alt) for alt in av[1]):
                    return False
            elif op is C.GROUPREF:
                return True
        return True

    def first(self, seq: list[tuple[Any, Any]]) -> frozenset[int]:
        """Characters a match of ``seq`` can start with (an over-approximation)."""
        out: frozenset[int] = frozenset()
        for i, (op, av) in enumerate(seq):
            chars = self.atom(op, av)
            if chars is not None:
                return out | chars
            if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
                out |= self.first(av[2])
            elif op is C.SUBPATTERN:
                out |= self.first(av[3])
            elif op is C.ATOMIC_GROUP:
                out |= self.first(av)
            elif op is C.BRANCH:
                for alt in av[1]:
                    out |= self.first(alt)
            elif op is C.GROUPREF:
                return ALL
            if not self.nullable(seq[i : i + 1]):
                return out
        return out

    def chars(self, seq: list[tuple[Any, Any]]) -> frozenset[int]:
        """Every character ``seq`` can consume (an over-approximation)."""
        out: frozenset[int] = frozenset()
        for op, av in seq:
            chars = self.atom(op, av)
            if chars is not None:
                out |= chars
            elif op in _REPEATS or op is C.POSSESSIVE_REPEAT:
                out |= self.chars(av[2])
            elif op is C.SUBPATTERN:
                out |= self.chars(av[3])
            elif op is C.ATOMIC_GROUP:
                out |= self.chars(av)
            elif op is C.BRANCH:
                for alt in av[1]:
                    out |= self.chars(alt)
            elif op is C.GROUPREF:
                return ALL
        return out

    def _lead(self, op: Any, av: Any, end: int = 0) -> frozenset[int] | None:
        """Characters of a big repeat that ``(op, av)`` starts with (ends with, for end=-1)."""
        if op in _REPEATS and av[1] > BIG:
            last = self._last_atom(av[2]) if end == -1 else None
            # (\d+\.)+ can only end on its "." : the split points it offers are few.
            return last if last is not None else self.chars(av[2])
        if op is C.SUBPATTERN and av[3]:
            op2, av2 = av[3][end]
            return self._lead(op2, av2, end)
        return None

    def _last_atom(self, seq: list[tuple[Any, Any]]) -> frozenset[int] | None:
        """Characters of the single-character element ``seq`` must end with, if any."""
        if len(seq) < 2 and not (seq and seq[0][0] is C.SUBPATTERN):
            return None  # a lone atom repeated (\d+) ends anywhere in its run
        op, av = seq[-1]
        if op is C.SUBPATTERN:
            return self._last_atom(av[3])
        return self.atom(op, av)

    def _adjacent(self, chars: frozenset[int], rest: list[tuple[Any, Any]]) -> None:
        # Two big repeats in a row that can take the same characters (\d+\w*, " +[\d ]+")
        # split every run between them in n ways: quadratic, 16 M steps on a 4 KiB window.
        for op, av in rest:
            lead = self._lead(op, av)
            if lead is not None and lead & chars:
                raise _Risk("adjacent repeats over the same characters")
            if not self.nullable([(op, av)]):
                return

    def walk(
        self, seq: list[tuple[Any, Any]], follow: frozenset[int], under: bool, outer: int = 1
    ) -> None:
        """Raise _Risk if ``seq`` can backtrack badly; ``under``: inside a big repeat;
        ``outer``: how many times the enclosing repeats can run ``seq`` (their product)."""
        for i, (op, av) in enumerate(seq):
            rest = seq[i + 1 :]
            after = self.first(rest) | (follow if self.nullable(rest) else frozenset())
            tail = self._lead(op, av, -1)
            if tail is not None:
                self._adjacent(tail, rest)
            if op in _REPEATS:
                lo, hi, body = av
                loose = hi > 1 and bool(self.chars(body) & after)
                if under and loose:
                    raise _Risk("nested quantifier: a repeat inside a repeat, not delimited")
                # Small repeats multiply: (a{1,8}){1,8}$ splits a run of a's in up to 8**8
                # ways at every start position, though neither repeat is big on its own.
                if outer > 1 and loose and min(hi - lo + 1, BIG_WAYS) ** min(outer, 64) > BIG_WAYS:
                    raise _Risk("nested small repeats that multiply, not delimited")
                big = hi > BIG
                inner = min(outer * hi, 1 << 20) if hi > 1 else outer
                self.walk(body, self.first(body) | after, under or big, inner)
            elif op is C.POSSESSIVE_REPEAT:
                self.walk(av[2], ALL, False)
            elif op is C.ATOMIC_GROUP:
                self.walk(av, ALL, False)
            elif op is C.SUBPATTERN:
                self.walk(av[3], after, under, outer)
            elif op is C.BRANCH:
                alts = av[1]
                if under:
                    seen: frozenset[int] = frozenset()
                    for alt in alts:
                        f = self.first(alt) if not self.nullable(alt) else ALL
                        if f & seen:
                            raise _Risk("alternatives that start alike, inside a repeat")
                        seen |= f
                for alt in alts:
                    self.walk(alt, after, under, outer)
            elif op in (C.ASSERT, C.ASSERT_NOT):
                self.walk(av[1], ALL, False)


def risk(pattern: bytes | str, flags: int = 0) -> str | None:
    """Why ``pattern`` may backtrack catastrophically, or None if its shape is safe."""
    try:
        tree = P.parse(pattern, flags)
    except re.error as exc:
        return f"does not compile: {exc}"
    t = _Tree(flags | tree.state.flags)
    try:
        t.walk(list(tree.data), ALL, False)
    except _Risk as exc:
        return str(exc)
    except RecursionError:
        return "too deeply nested"
    return None


def _literals(seq: list[tuple[Any, Any]], out: list[bytes]) -> None:
    run = bytearray()
    for op, av in seq:
        if op is C.LITERAL:
            run.append(av)
            continue
        if run:
            out.append(bytes(run))
            run = bytearray()
        if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
            _literals(av[2], out)
        elif op is C.SUBPATTERN:
            _literals(av[3], out)
        elif op is C.BRANCH:
            for alt in av[1]:
                _literals(alt, out)
    if run:
        out.append(bytes(run))


_FILLERS = (b"a", b" ", b"\r\n", b"0", b"\x00", b"aA0 .-_/:;=", b"\xff", b"a ", b"<a>")


def hostile_inputs(pattern: bytes | str, flags: int = 0, size: int = REGEX_WINDOW) -> list[bytes]:
    """Inputs that tend to make naive regexes backtrack: the pattern's literal prefix, then
    long runs of one character class, or of the pattern's own literals, all ``size`` bytes."""
    lits: list[bytes] = []
    try:
        _literals(list(P.parse(pattern, flags).data), lits)
    except re.error:
        pass
    lits = [x if isinstance(x, bytes) else x.encode("latin-1", "replace") for x in lits]
    prefix = lits[0] if lits else b""
    out = [(f * size)[:size] for f in _FILLERS]
    for f in _FILLERS:
        out.append((prefix + f * size)[:size])
    if lits:
        joined = b"".join(lits)
        out.append((prefix + joined * (size // max(1, len(joined)) + 1))[:size])
        for lit in lits[1:6]:
            out.append((prefix + (lit + b" ") * size)[:size])
            out.append((prefix + (lit + b"a") * size)[:size])
    return out


def worst_time(regex: Any, inputs: Iterable[bytes]) -> float:
    """The slowest ``regex.search`` over ``inputs``, in seconds of CPU time (``regex`` is a
    compiled ``re`` or ``regex`` pattern)."""
    worst = 0.0
    for data in inputs:
        # This thread's CPU time: on a loaded machine wall time measures the neighbours.
        t0 = time.thread_time()
        regex.search(data)
        worst = max(worst, time.thread_time() - t0)
    return worst
