"""Known scans for the results tests: a meta, and a builder filled with known rows.

Rows reach the builder as production's do: schema.PORTS record batches through
``ResultBuilder.add_batch`` (``ports_batch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from prtip_nb.interop import _rows
from prtip_nb.results import ResultBuilder, ScanMeta, ScanResult

T0 = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
T0_US = int(T0.timestamp() * 1_000_000)
CONFIG = {"targets": ["10.0.0.1", "10.0.0.2"], "ports": "20-25,80", "method": "syn"}  # parse-only
SCAN_ID = "20261128T101500Z-aaaaaa"


def make_meta(scan_id: str = SCAN_ID, started: datetime = T0) -> ScanMeta:
    return ScanMeta(scan_id=scan_id, config=dict(CONFIG), started=started)


# The ports columns a row tuple gives, in order; ``first_seen`` in µs since the epoch.
ROW = ("host", "hostname", "family", "proto", "port", "state", "reason", "ttl", "rtt_ms",
       "first_seen")  # fmt: skip


def ports_batch(rows: Sequence[tuple[Any, ...]], scan_id: str = SCAN_ID) -> pa.RecordBatch:
    """A schema.PORTS batch of ``rows`` (tuples of ``ROW``), the other columns null, built by
    the importers' converter (``interop._rows.ports_batch``)."""
    columns = {name: [row[i] for row in rows] for i, name in enumerate(ROW)}
    return _rows.ports_batch(scan_id, columns, len(rows))


FILL_ROWS = [
    ("10.0.0.2", None, 4, "tcp", 80, "open", "syn-ack", 64, 0.9, T0_US + 5),  # parse-only
    ("10.0.0.1", "gw.lan", 4, "tcp", 22, "open", "syn-ack", 64, 0.4, T0_US + 3),  # parse-only
    ("10.0.0.1", None, 4, "tcp", 21, "closed", "reset", 64, 0.2, T0_US + 1),  # parse-only
    ("10.0.0.1", None, 4, "udp", 53, "open|filtered", "no-response", None, None, None),  # noqa: E501 # parse-only
    ("10.0.0.1", None, 4, "tcp", 23, "filtered", "no-response", None, None, None),  # parse-only
    ("10.0.0.10", None, 4, "tcp", 80, "filtered", "no-response", None, None, None),  # noqa: E501 # parse-only
    ("10.0.0.2", None, 4, "tcp", 22, "closed", "reset", 63, 1.5, T0_US + 2),  # parse-only
]


def fill(b: ResultBuilder, per_batch: int = 0) -> None:
    """Two responsive hosts and one silent one, added out of order (as a shuffled scan is),
    ``per_batch`` rows a batch (0: all in one)."""
    step = per_batch or len(FILL_ROWS)
    for start in range(0, len(FILL_ROWS), step):  # with a sink, one ports part a batch
        b.add_batch(ports_batch(FILL_ROWS[start:start + step], b.meta.scan_id))
    b.add_telemetry(0.25, 7, 4, 2, 0, 28.0, 50_000_000, 12.5)
    b.add_event(0.0, "started", {"targets": 3})
    b.add_event(0.3, "finished", None)


def finished(scan_id: str = SCAN_ID, started: datetime = T0) -> ScanResult:
    b = ResultBuilder(make_meta(scan_id, started))
    fill(b)
    return b.finish(ended=started + timedelta(seconds=1.5))
