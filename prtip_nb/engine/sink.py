"""RecordSink: verdict records (engine.records) in bulk to ports RecordBatches.

numpy maps indices to (host, proto, port) and codes to nmap's words for thousands of
records at a time; columns are built from buffers, never with ``pa.array`` (which would
import pandas, see results/_convert.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from ..results import _arrow, schema
from ..results import _convert as cv
from ..targets import PortSet, TargetSet
from .counters import Counters
from .records import NO_RESPONSE, PEAK_RSS, RECORD, RETRIES, SENT, SKIPPED

DTYPE = np.dtype(
    [("index", "<i8"), ("code", "<i4"), ("rtt_ms", "<f4"), ("t_us", "<i8"), ("ttl", "u1")]
)
assert DTYPE.itemsize == RECORD.size

Decode = Callable[[int], tuple[str, str]]


class PortMap:
    """Vectorised index → (host, proto, port) for one TargetSpace (host = j % H)."""

    def __init__(self, targets: TargetSet, ports: PortSet) -> None:
        self.targets = targets
        self.n_hosts = targets.size
        ranges = [("tcp", lo, hi) for lo, hi in ports.tcp]
        ranges += [("udp", lo, hi) for lo, hi in ports.udp]
        counts = np.array([hi - lo + 1 for _, lo, hi in ranges], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.lows = np.array([lo for _, lo, _ in ranges], dtype=np.int64)
        self.protos = [p for p, _, _ in ranges]
        self.proto_codes = np.array([0 if p == "tcp" else 1 for p in self.protos], dtype=np.int32)

    def locate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(host index, proto code 0=tcp 1=udp, port) arrays for ``index``."""
        host = index % self.n_hosts
        pidx = index // self.n_hosts
        r = np.searchsorted(self.starts, pidx, side="right") - 1
        port = self.lows[r] + (pidx - self.starts[r])
        return host, self.proto_codes[r], port


class RecordSink:
    """Collects verdict records and hands them to ``on_batch`` as ports RecordBatches.

    ``keep``: "all" rows, "responsive" (drop no-response) or "open" only. Counters are
    updated in bulk as records arrive, so the engines' hot loops stay small.

    A batch goes out every ``batch_rows`` records or, with ``max_age``, once its oldest
    record is that many seconds old (``flush_if_older`` lets a timer thread enforce it when
    no record arrives). After ``on_batch`` returns (the part file is written),
    ``on_flushed`` gets the indices of every record flushed, kept or not: what a
    checkpoint may count as done.
    """

    def __init__(
        self,
        *,
        targets: TargetSet,
        ports: PortSet,
        scan_id: str,
        decode: Decode,
        on_batch: Callable[[pa.RecordBatch], None],
        counters: Counters,
        keep: str = "all",
        batch_rows: int = 65536,
        max_age: float | None = None,
        on_flushed: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        self.map = PortMap(targets, ports)
        self.targets = targets
        self.scan_id = scan_id
        self.decode = decode
        self.on_batch = on_batch
        self.counters = counters
        self.keep = keep
        self.batch_rows = batch_rows
        self.max_age = max_age
        self.on_flushed = on_flushed
        self.oldest = 0.0  # monotonic time the first record now buffered arrived
        self.buffer = bytearray()
        self.lock = threading.Lock()
        self.worker_values: dict[tuple[int, int], int] = {}  # (worker, kind) -> value
        self.peak_rss: list[int] = []
        self._verdicts: dict[int, tuple[str, str]] = {}

    # -- producers -------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray, worker: int = 0) -> None:
        """Whole records (len a multiple of RECORD.size), from an engine or a worker's pipe."""
        recs = np.frombuffer(bytes(data), dtype=DTYPE)
        control = recs["code"] < NO_RESPONSE
        if control.any():
            for rec in recs[control].tolist():
                self._control(worker, rec[0], rec[1])
            recs = recs[~control]
        if len(recs) == 0:
            return
        codes = recs["code"]
        c = self.counters
        c.done += len(recs)
        c.received += int((codes != NO_RESPONSE).sum())
        c.open += int((codes == 0).sum())
        with self.lock:
            if not self.buffer:
                self.oldest = time.monotonic()
            self.buffer += recs.tobytes()
            if len(self.buffer) >= self.batch_rows * DTYPE.itemsize or (
                self.max_age is not None and time.monotonic() - self.oldest >= self.max_age
            ):
                self._flush_locked()

    def _control(self, worker: int, value: int, kind: int) -> None:
        if kind == PEAK_RSS:
            self.peak_rss.append(value)
            return
        self.worker_values[(worker, kind)] = value
        total = sum(v for (_, k), v in self.worker_values.items() if k == kind)
        if kind == SENT:
            self.counters.sent = total
        elif kind == RETRIES:
            self.counters.retries = total
        elif kind == SKIPPED:
            self.counters.skipped = total

    def flush(self) -> None:
        with self.lock:
            self._flush_locked()

    def flush_if_older(self, age: float) -> None:
        """Flush when the oldest buffered record is ``age`` seconds old (any thread)."""
        with self.lock:
            if self.buffer and time.monotonic() - self.oldest >= age:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if not self.buffer:
            return
        recs = done = np.frombuffer(bytes(self.buffer), dtype=DTYPE)
        self.buffer.clear()
        if self.keep == "open":
            recs = recs[recs["code"] == 0]
        elif self.keep == "responsive":
            recs = recs[recs["code"] != NO_RESPONSE]
        if len(recs):
            self.on_batch(self.to_batch(recs))
        if self.on_flushed is not None:
            self.on_flushed(done["index"])

    # -- conversion ------------------------------------------------------------------------
    def to_batch(self, recs: np.ndarray) -> pa.RecordBatch:
        """A schema.PORTS RecordBatch for ``recs``, built from buffers."""
        n = len(recs)
        host, proto, port = self.map.locate(recs["index"].astype(np.int64))
        uhost, hinv = np.unique(host, return_inverse=True)
        addrs = [self.targets.address(int(h)) for h in uhost]
        names = [self.targets.hostname(a) for a in addrs]
        fams = np.array([self.targets.family(int(h)) for h in uhost], dtype=np.uint8)
        take = _index_array(hinv)
        zero = _arrow.zeros(n)

        ucode, cinv = np.unique(recs["code"], return_inverse=True)
        verdicts = [self._verdict(int(c)) for c in ucode]
        states = sorted({s for s, _ in verdicts})
        reasons = sorted({r for _, r in verdicts})
        state_of = np.array([states.index(s) for s, _ in verdicts], dtype=np.int32)
        reason_of = np.array([reasons.index(r) for _, r in verdicts], dtype=np.int32)

        answered = recs["code"] != NO_RESPONSE
        cols = {
            "scan_id": _arrow.constant_dict(self.scan_id, n, zero),
            "host": cv.plain_strings(addrs).take(take),
            "hostname": (
                cv.plain_strings(names).take(take)
                if any(names)
                else _arrow.null_array(pa.string(), n, zero)
            ),
            "family": _numeric(fams[hinv], pa.uint8()),
            "proto": pa.DictionaryArray.from_arrays(
                _index_array(proto.astype(np.int32)), cv.plain_strings(["tcp", "udp"])
            ),
            "port": _numeric(port.astype(np.uint16), pa.uint16()),
            "state": pa.DictionaryArray.from_arrays(
                _index_array(state_of[cinv]), cv.plain_strings(states)
            ),
            "reason": pa.DictionaryArray.from_arrays(
                _index_array(reason_of[cinv]), cv.plain_strings(reasons)
            ),
            "rtt_ms": _numeric(recs["rtt_ms"].astype(np.float32), pa.float32(), answered),
            "ttl": _numeric(recs["ttl"].astype(np.uint8), pa.uint8(), recs["ttl"] != 0),
            "first_seen": _numeric(recs["t_us"].astype(np.int64), schema.PORTS.field(
                "first_seen").type),
        }
        arrays = [
            cols[f.name] if f.name in cols else _arrow.null_array(f.type, n, zero)
            for f in schema.PORTS
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=schema.PORTS)

    def _verdict(self, code: int) -> tuple[str, str]:
        v = self._verdicts.get(code)
        if v is None:
            v = self._verdicts[code] = (
                ("filtered", "no-response") if code == NO_RESPONSE else self.decode(code)
            )
        return v


def _index_array(values: np.ndarray) -> pa.Array:
    arr = np.ascontiguousarray(values, dtype=np.int32)
    return pa.Array.from_buffers(pa.int32(), len(arr), [None, pa.py_buffer(arr)])


def _numeric(values: np.ndarray, typ: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    arr = np.ascontiguousarray(values)
    validity = None
    nulls = 0
    if valid is not None and not valid.all():
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = int((~valid).sum())
    return pa.Array.from_buffers(typ, len(arr), [validity, pa.py_buffer(arr)], null_count=nulls)
