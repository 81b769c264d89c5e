"""Sorted, merged, inclusive integer intervals: the one representation of ports and hosts.

Ports and addresses are both kept as ``(first, last)`` pairs so that ``-p-`` or a /8 stays a
single tuple. Everything here is linear in the number of intervals, never in their size.
"""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[int, int]

__all__ = ["Interval", "merge", "subtract", "total"]


def merge(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sort and merge overlapping or adjacent inclusive intervals."""
    out: list[Interval] = []
    for first, last in sorted(intervals):
        # Adjacent intervals merge too (1-2 and 3-4 -> 1-4): fewer ranges, faster bisects.
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return tuple(out)


def subtract(keep: tuple[Interval, ...], remove: tuple[Interval, ...]) -> tuple[Interval, ...]:
    """``keep`` minus ``remove``; both must already be merged (see :func:`merge`)."""
    out: list[Interval] = []
    j = 0
    for first, last in keep:
        # Skip removals that end before this interval starts; they cannot touch later ones.
        while j < len(remove) and remove[j][1] < first:
            j += 1
        k = j
        cur = first
        while k < len(remove) and remove[k][0] <= last:
            r_first, r_last = remove[k]
            if r_first > cur:
                out.append((cur, r_first - 1))
            cur = max(cur, r_last + 1)
            if cur > last:
                break
            k += 1
        if cur <= last:
            out.append((cur, last))
    return tuple(out)


def total(intervals: Iterable[Interval]) -> int:
    """Number of integers covered (a Python int: a v6 /64 is 2**64)."""
    return sum(last - first + 1 for first, last in intervals)
