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

from ..results import _convert as cv
from ..results import schema
from ..targets import TargetSet

__all__ = ["HostTally"]

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
            # EARLIEST WINS: sort this flush's responsive rows by time, keep each host's
            # first, and take it where it beats what earlier flushes saw.
            order = np.argsort(rt, kind="stable")
            rh, rt, rr = rh[order], rt[order], rr[order]
            uh, first = np.unique(rh, return_index=True)
            better = rt[first] < self.first_t[uh]
            self.first_t[uh[better]] = rt[first][better]
            self.first_reason[uh[better]] = rr[first][better]

    def table(self, targets: TargetSet, scan_id: str, reasons: Sequence[str]) -> pa.Table:
        """The hosts rows (schema.HOSTS) of every host with at least one row tallied."""
        total = self.counts.sum(axis=1)
        seen = np.flatnonzero(total)
        addrs = [targets.address(int(h)) for h in seen]
        counts = self.counts[seen]
        up = self.first_reason[seen] >= 0
        words = list(reasons)
        reason = [words[int(r)] if ok else "no-response"
                  for r, ok in zip(self.first_reason[seen].tolist(), up.tolist(), strict=True)]
        rtt = self.rtt[seen]
        by_state = {w: counts[:, schema.STATES.index(w)] for w in _COUNTED}
        other = total[seen] - sum(by_state.values())
        columns = {
            "scan_id": [scan_id] * len(seen),
            "host": addrs,
            "hostname": [targets.hostname(a) for a in addrs],
            "family": [targets.family(int(h)) for h in seen],
            "state": ["up" if u else "unknown" for u in up.tolist()],
            "reason": reason,
            "rtt_ms": [None if not np.isfinite(v) else v for v in rtt.tolist()],
            **{w: by_state[w].tolist() for w in _COUNTED},
            "other": other.tolist(),
        }
        return cv.table(columns, schema.HOSTS)
