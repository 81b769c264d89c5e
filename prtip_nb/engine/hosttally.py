"""HostTally: the hosts table of a scan whose ports rows are not all held in memory.

The hosts table is normally derived at finish from every ports row (results._hosts). A
scan that holds only its open rows (``hold="open"``: the rest streamed to the dataset)
cannot do that, so its RecordSink tallies every verdict here as it flushes, by host
*index* (the target set's, not the address text): a few numpy arrays of the target
set's size, about 40 bytes a host whatever the number of ports (a /15 x 100 ports: 5 MiB
against 13.1M rows). ``table`` then builds exactly the rows ``derive_hosts`` would:

- open / closed / filtered / other: rows per state;
- state "up" with the reason of the earliest responsive row (by first_seen), else
  "unknown" / "no-response";
- rtt_ms: the smallest measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from ..results import _arrow, schema
from ..results import _convert as cv
from ..targets import TargetSet

__all__ = ["HostTally", "V4Text"]

_NO_TIME = np.iinfo(np.int64).max
_COUNTED = ("open", "closed", "filtered")


class HostTally:
    """Per-host counts and firsts over ``n_hosts`` host indices (see the module docstring).

    ``add`` takes state and reason *indices* into the sink's vocabularies (``states``:
    schema.STATES order; ``reasons``: any order, given again to ``table``).
    """

    def __init__(self, n_hosts: int) -> None:
        self.n_hosts = n_hosts
        self.n_states = len(schema.STATES) + 1  # the last slot: any other word
        self.counts = np.zeros((n_hosts, self.n_states), np.uint32)
        self.first_t = np.full(n_hosts, _NO_TIME, np.int64)  # earliest responsive row
        self.first_reason = np.full(n_hosts, -1, np.int32)
        self.rtt = np.full(n_hosts, np.inf, np.float32)
        responsive = np.zeros(self.n_states, bool)
        responsive[[schema.STATES.index(w) for w in ("open", "closed", "unfiltered")]] = True
        self._responsive = responsive

    def add(self, host: np.ndarray | None, state: np.ndarray, reason: np.ndarray,
            rtt_ms: np.ndarray, t_us: np.ndarray, answered: np.ndarray) -> None:
        """One flush of records; ``host`` None means every record is host 0."""
        n = len(state)
        if n == 0:
            return
        h = np.zeros(n, np.int64) if host is None else host.astype(np.int64, copy=False)
        st = np.minimum(state, self.n_states - 1).astype(np.int64)
        # (host, state) pairs counted by a sort of this flush: bounded by the flush, not
        # by the target set (a bincount's minlength would be hosts x states per flush).
        keys, n_each = np.unique(h * self.n_states + st, return_counts=True)
        self.counts.reshape(-1)[keys] += n_each.astype(np.uint32)
        if answered.any():
            np.minimum.at(self.rtt, h[answered], rtt_ms[answered])
        resp = self._responsive[st]
        if resp.any():
            rh, rt, rr = h[resp], t_us[resp], reason[resp]
            # EARLIEST WINS: each host's earliest time by minimum.at; the rows that set a
            # new earliest (strictly before what earlier flushes saw) give its reason, the
            # first such row of a host when several tie. Few rows do (a host's first
            # sight): a sort of those, not of the flush (an argsort and a unique of every
            # responsive row were ~12 ms a 64K-row flush of a /15, now ~1).
            before = self.first_t[rh]
            np.minimum.at(self.first_t, rh, rt)
            won = np.flatnonzero((rt < before) & (rt == self.first_t[rh]))
            if len(won):
                uh, first = np.unique(rh[won], return_index=True)
                self.first_reason[uh] = rr[won[first]]

    def table(self, targets: TargetSet, scan_id: str, reasons: Sequence[str]) -> pa.Table:
        """The hosts rows (schema.HOSTS) of every host with at least one row tallied.

        Built from the arrays (no Python object per host for an IPv4 target set without
        names): as lists, a /15's 131K rows cost ~40 MiB more at the end of the scan.
        """
        total = self.counts.sum(axis=1)
        seen = np.flatnonzero(total)
        n = len(seen)
        zero = _arrow.zeros(n)
        if targets.families == {4}:
            host = V4Text(targets).text(seen)
            family = _numbers(np.full(n, 4, np.uint8), pa.uint8())
        else:
            host = cv.plain_strings([targets.address(int(h)) for h in seen])
            family = _numbers(np.array([targets.family(int(h)) for h in seen], np.uint8),
                              pa.uint8())
        hostname = (cv.strings([targets.hostname(a) for a in host.to_pylist()])
                    if targets.has_hostnames else _arrow.null_array(pa.string(), n, zero))
        first = self.first_reason[seen]
        up = first >= 0
        words = [*reasons, "no-response"]
        reason_idx = np.where(up, first, len(words) - 1).astype(np.int32)
        rtt = self.rtt[seen]
        counts = self.counts[seen]
        by_state = {w: counts[:, schema.STATES.index(w)] for w in _COUNTED}
        other = total[seen] - sum(by_state.values())
        columns = {
            "scan_id": _arrow.constant_dict(scan_id, n, zero),
            "host": host,
            "hostname": hostname,
            "family": family,
            "state": pa.DictionaryArray.from_arrays(
                _numbers(np.where(up, 0, 1).astype(np.int32), pa.int32()),
                cv.plain_strings(["up", "unknown"])),
            "reason": pa.DictionaryArray.from_arrays(_numbers(reason_idx, pa.int32()),
                                                     cv.plain_strings(words)),
            "rtt_ms": _numbers(np.where(np.isfinite(rtt), rtt, 0).astype(np.float32),
                               pa.float32(), np.isfinite(rtt)),
            **{w: _numbers(by_state[w].astype(np.uint32), pa.uint32()) for w in _COUNTED},
            "other": _numbers(other.astype(np.uint32), pa.uint32()),
        }
        # Schema 2's inventory columns (addresses, names, times, uptime...) are not known
        # from port verdicts: null, as the hosts that a port scan derives have them.
        return pa.Table.from_arrays(
            [columns[f.name] if f.name in columns else _arrow.null_array(f.type, n, zero)
             for f in schema.HOSTS], schema=schema.HOSTS)


class V4Text:
    """Host index -> dotted quad for an IPv4-only TargetSet, vectorised."""

    #: Target sets up to this many hosts keep every host's text (``column``): 2.1 MiB for
    #: a /15, 4.3 MiB at most.
    WHOLE = 1 << 18

    def __init__(self, targets: TargetSet) -> None:
        self.starts = np.array(targets.starts, np.int64)
        self.lows = np.array([lo for _, lo, _ in targets.ranges], np.int64)
        self.dot = cv.scalar_str(".")
        self.size = targets.size
        self._whole: pa.Array | None = None

    def column(self, index: np.ndarray) -> pa.Array:
        """The host column of rows whose host indices are ``index`` (any order, repeats).

        WHY A TABLE OF EVERY HOST. Each 64K-row flush of a big scan made its hosts' text
        anew: ``np.unique`` of the indices, four casts and a join over the distinct ones,
        a take back to the rows: ~13 ms a flush (0.2 us a probe) on the flush thread. The
        text of all of a /15's hosts is made once (~35 ms, 2.1 MiB) and each flush is one
        ``take`` (~1 ms)."""
        if self.size > self.WHOLE:
            uniq, inv = np.unique(index, return_inverse=True)
            return self.text(uniq).take(_numbers(inv.astype(np.int64), pa.int64()))
        if self._whole is None:
            self._whole = self.text(np.arange(self.size, dtype=np.int64))
        return self._whole.take(_numbers(np.ascontiguousarray(index, np.int64), pa.int64()))

    def text(self, index: np.ndarray) -> pa.Array:
        import pyarrow.compute as pc

        r = np.searchsorted(self.starts, index, side="right") - 1
        value: np.ndarray = (self.lows[r] + (index - self.starts[r])).astype(np.int64)
        quads = [pc.cast(_numbers(((value >> s) & 255).astype(np.uint8), pa.uint8()),
                         pa.string()) for s in (24, 16, 8, 0)]
        out: pa.Array = pc.binary_join_element_wise(*quads, self.dot)
        return out


def _numbers(values: np.ndarray, typ: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """A numpy array as an Arrow array of ``typ`` from its buffer (no pa.array: pandas)."""
    arr = np.ascontiguousarray(values)
    validity, nulls = None, 0
    if valid is not None and not valid.all():
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = int((~valid).sum())
    return pa.Array.from_buffers(typ, len(arr), [validity, pa.py_buffer(arr)], null_count=nulls)
