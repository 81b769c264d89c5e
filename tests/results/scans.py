"""Known scans for the results tests: a meta, and a builder filled with known rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prtip_nb.results import ResultBuilder, ScanMeta, ScanResult

T0 = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
T0_US = int(T0.timestamp() * 1_000_000)
CONFIG = {"targets": ["10.0.0.1", "10.0.0.2"], "ports": "20-25,80", "method": "syn"}  # parse-only


def make_meta(scan_id: str = "20261128T101500Z-aaaaaa", started: datetime = T0) -> ScanMeta:
    return ScanMeta(scan_id=scan_id, config=dict(CONFIG), started=started)


def fill(b: ResultBuilder) -> None:
    """Two responsive hosts and one silent one, appended out of order (as a shuffled scan is)."""
    rows = [
        ("10.0.0.2", None, 4, "tcp", 80, "open", "syn-ack", 64, 0.9, T0_US + 5),  # parse-only
        ("10.0.0.1", "gw.lan", 4, "tcp", 22, "open", "syn-ack", 64, 0.4, T0_US + 3),  # parse-only
        ("10.0.0.1", None, 4, "tcp", 21, "closed", "reset", 64, 0.2, T0_US + 1),  # parse-only
        ("10.0.0.1", None, 4, "udp", 53, "open|filtered", "no-response", None, None, None),  # noqa: E501 # parse-only
        ("10.0.0.1", None, 4, "tcp", 23, "filtered", "no-response", None, None, None),  # parse-only
        ("10.0.0.10", None, 4, "tcp", 80, "filtered", "no-response", None, None, None),  # noqa: E501 # parse-only
        ("10.0.0.2", None, 4, "tcp", 22, "closed", "reset", 63, 1.5, T0_US + 2),  # parse-only
    ]
    for row in rows:
        b.append(*row)
    b.add_telemetry(0.25, 7, 4, 2, 0, 28.0, 50_000_000, 12.5)
    b.add_event(0.0, "started", {"targets": 3})
    b.add_event(0.3, "finished", None)


def finished(scan_id: str = "20261128T101500Z-aaaaaa", started: datetime = T0) -> ScanResult:
    b = ResultBuilder(make_meta(scan_id, started))
    fill(b)
    return b.finish(ended=started + timedelta(seconds=1.5))
