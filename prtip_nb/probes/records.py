"""Verdict records: the one format every engine reports its verdicts in.

A verdict is 25 bytes: ``index`` (int64, the probe's position in the scan's index space),
``code`` (int32: an engine-defined verdict, e.g. the errno of a connect(); -1 = no answer),
``rtt_ms`` (float32), ``t_us`` (int64, µs since the epoch) and ``ttl`` (uint8: the reply's
IP TTL / hop limit, 0 = unknown, as for a connect scan). Engines only pack records;
``RecordSink`` turns thousands at a time into a ports RecordBatch with numpy — no Python
object per port, and no ``pa.array`` (which would import pandas: see results/_convert.py).

The same bytes travel from worker processes over a pipe, so in-process and multi-process
scans share this path exactly. ``RECORD`` (struct) and ``DTYPE`` (numpy, for whole blocks)
are one layout, checked at import; ``engine.sink`` does the conversion to Arrow. This
module sits in ``probes/`` because probe modules classify replies into these records.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import numpy as np

RECORD = struct.Struct("<qifqB")
DTYPE = np.dtype(
    [("index", "<i8"), ("code", "<i4"), ("rtt_ms", "<f4"), ("t_us", "<i8"), ("ttl", "u1")]
)
assert DTYPE.itemsize == RECORD.size

NO_RESPONSE = -1
# Control records from worker processes (never verdicts): ``index`` carries the value.
SENT, RETRIES, PEAK_RSS, SKIPPED = -2, -3, -4, -5


class RecordBuffer:
    """The producer side: packs verdicts and hands them on in chunks (``deliver(bytes)``).

    Chunks go out every ``max_records`` records or ``max_age`` seconds, so progress stays
    live while the hot loop pays one ``pack_into``-sized append per verdict.
    """

    __slots__ = ("deliver", "out", "limit", "max_age", "last")

    def __init__(
        self, deliver: Callable[[bytes], None], max_records: int = 4096, max_age: float = 0.05
    ) -> None:
        self.deliver = deliver
        self.out = bytearray()
        self.limit = max_records * RECORD.size
        self.max_age = max_age
        self.last = time.monotonic()

    def emit(self, index: int, code: int, rtt: float | None, ttl: int = 0) -> None:
        """One verdict; ``rtt`` in seconds, None when nothing answered."""
        self.out += _pack(
            index, code, _NAN if rtt is None else rtt * 1000.0, time.time_ns() // 1000, ttl
        )
        if len(self.out) >= self.limit or time.monotonic() - self.last > self.max_age:
            self.flush()

    def emit_many(self, verdicts: list[tuple[int, int, float]]) -> None:
        """Answered verdicts ``(index, code, rtt seconds)``, stamped with one time: a
        connect scan's pass hands over up to 64 at once (net/connect.py)."""
        t_us = time.time_ns() // 1000
        self.out += b"".join([_pack(i, c, r * 1000.0, t_us, 0) for i, c, r in verdicts])
        if len(self.out) >= self.limit or time.monotonic() - self.last > self.max_age:
            self.flush()

    def write(self, records: bytes) -> None:
        """Records packed elsewhere (RECORD layout), e.g. by numpy for a whole block."""
        self.out += records
        if len(self.out) >= self.limit or time.monotonic() - self.last > self.max_age:
            self.flush()

    def tick(self) -> None:
        """Flush if the oldest buffered verdict is older than ``max_age``."""
        if self.out and time.monotonic() - self.last > self.max_age:
            self.flush()

    def control(self, kind: int, value: int) -> None:
        self.out += _pack(value, kind, 0.0, 0, 0)

    def flush(self) -> None:
        self.last = time.monotonic()
        if self.out:
            data = bytes(self.out)
            self.out.clear()
            self.deliver(data)


_pack = RECORD.pack
_NAN = float("nan")
