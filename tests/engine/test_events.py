"""Scan events: order and completeness, iterators, slow and broken subscribers."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import prtip_nb as pn
from prtip_nb.engine import events as ev
from tests.conftest import tcp_listeners

pytestmark = pytest.mark.usefixtures("netns")

OPEN = [7001, 7002, 7003]


@pytest.fixture
def listening() -> Iterator[list[int]]:
    with tcp_listeners(OPEN) as ports:
        yield ports


def test_order_and_completeness(listening: list[int]) -> None:
    s = pn.Scan("127.0.0.1", ports="7000-7100", method="connect")
    seen: list[ev.Event] = []
    it = s.events()  # subscribed before start: sees everything
    s.start()
    for e in it:
        seen.append(e)
    res = s.wait()
    assert isinstance(seen[0], ev.ScanStarted)
    terminal = [e for e in seen if e.terminal]
    assert terminal == [seen[-1]] and isinstance(seen[-1], ev.ScanCompleted)
    found = sorted(e.port for e in seen if isinstance(e, ev.PortFound))
    assert found == sorted(res.open_ports["port"].astype(int)) == listening
    # The events table records the same story (Progress lives in telemetry instead).
    kinds = list(res.events["kind"].astype(str))
    assert kinds[0] == "ScanStarted" and kinds[-1] == "ScanCompleted"
    assert kinds.count("PortFound") == len(listening)
    payload = json.loads(res.events.loc[res.events["kind"] == "PortFound", "payload"].iloc[0])
    assert payload["state"] == "open"


def test_callback_with_type_filter_and_async_iterator(listening: list[int]) -> None:
    s = pn.Scan("127.0.0.1", ports="7000-7100", method="connect")
    ports: list[int] = []
    s.subscribe(lambda e: ports.append(e.port), ev.PortFound)

    async def consume() -> list[str]:
        kinds = []
        s.start()
        async for e in s.events():
            kinds.append(e.kind)
        return kinds

    kinds = asyncio.run(consume())
    s.wait()
    time.sleep(0.2)  # the dispatcher thread delivers callbacks
    assert sorted(ports) == listening
    assert kinds[-1] == "ScanCompleted"


def test_raising_subscriber_is_detached_and_scan_completes(listening: list[int]) -> None:
    s = pn.Scan("127.0.0.1", ports="7000-7100", method="connect")
    calls = []

    def broken(e: ev.Event) -> None:
        calls.append(e)
        raise ValueError("boom")

    s.subscribe(broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = s.start().wait()
        time.sleep(0.3)
    assert s.status == "completed"
    assert len(calls) == 1  # reported once, then detached
    assert any("boom" in str(w.message) for w in caught)
    assert sorted(res.open_ports["port"].astype(int)) == listening


def test_slow_subscriber_loses_progress_never_results(listening: list[int]) -> None:
    bus = ev.EventBus()
    sub = bus.subscribe(maxsize=5)
    for i in range(50):
        bus.publish(ev.Progress(i, "x", i, 100, i, 0, i, 1.0))
    bus.publish(ev.PortFound(51.0, "x", "127.0.0.1", "tcp", 80, "open", "syn-ack"))
    for i in range(50):
        bus.publish(ev.Progress(60 + i, "x", i, 100, i, 0, i, 1.0))
    bus.publish(ev.ScanCompleted(200.0, "x", 100, 1, 200.0))
    got = list(sub)
    assert any(isinstance(e, ev.PortFound) for e in got)
    assert isinstance(got[-1], ev.ScanCompleted)
    assert len(got) <= 6 and sub.dropped >= 94


def test_a_batch_is_queued_whole_in_order_and_trims_progress_only() -> None:
    """publish_many (a flush's open ports at once): every result kept, in order, and the
    queue over its bound loses its oldest Progress events, as one publish at a time does."""
    bus = ev.EventBus()
    sub = bus.subscribe(maxsize=5)
    record: list[ev.Event] = []
    bus._record = record.append
    progress = [ev.Progress(i, "x", i, 100, i, 0, i, 1.0) for i in range(4)]
    found = [ev.PortFound(10.0 + i, "x", "127.0.0.1", "tcp", i, "open", "syn-ack")
             for i in range(8)]
    bus.publish_many([*progress, *found[:4]])
    bus.publish_many(found[4:])
    bus.publish(ev.ScanCompleted(200.0, "x", 100, 8, 200.0))
    got = list(sub)
    assert [e for e in got if isinstance(e, ev.PortFound)] == found
    assert sub.dropped == 4 and not any(isinstance(e, ev.Progress) for e in got)
    assert record[:12] == [*progress, *found]


def test_cancel_gives_scan_cancelled_and_keeps_dataset(tmp_path: Path) -> None:
    s = pn.Scan("127.0.0.1", ports="1-65535", method="connect", rate=20000, workers=1,
                output=str(tmp_path))
    it = s.events((ev.ScanCancelled, ev.PortFound))
    s.start()
    time.sleep(0.5)
    s.cancel()
    kinds = [e.kind for e in it]
    res = s.wait()
    assert kinds[-1] == "ScanCancelled"
    back = pn.read_scans(tmp_path, scan_id=res.scan_id)
    assert len(back.ports) == len(res.ports) > 0


@pytest.mark.serial
def test_telemetry_rows_every_100_ms_then_every_250_ms() -> None:
    """The poller's rows: one at the start, at least every 100 ms for the first 2 s (a short
    scan's chart starts near 0), then every 250 ms (the default interval)."""
    res = pn.scan("127.0.0.1", ports="1-7000", method="connect", rate=2000, workers=1)
    tel = res.telemetry
    t = tel["t"].astype(float).to_numpy()[:-1]  # the last row is the closing sample
    assert t[0] < 0.1, t[:3]
    gaps = np.diff(t) * 1000
    dense, later = gaps[t[1:] < 1.9], gaps[t[:-1] > 2.1]
    assert len(dense) >= 15 and len(later) >= 4, gaps
    assert ((dense > 80) & (dense < 150)).mean() >= 0.9, dense
    assert ((later > 200) & (later < 300)).mean() >= 0.9, later
    assert (tel["rss_bytes"].astype(int) > 0).all()
    assert int(tel["sent"].iloc[-1]) == 7000
    assert float(tel["pps"].iloc[2]) > 500  # about 2000/s mid-scan
    assert (tel["threads"].astype(int) >= 2).all()


def test_retries_are_published_and_recorded(dropped: str) -> None:
    """Two silent ports (nftables drops their SYNs), one retry each: ``RetryScheduled``
    reaches a subscriber and the events table with the count the telemetry ends on; a scan
    whose probes all answer publishes none (test_order_and_completeness's kinds)."""
    s = pn.Scan("127.0.0.1", ports="1080,4443", method="connect", timeout=0.2, max_retries=1,
                telemetry_interval=0.05)
    got: list[ev.RetryScheduled] = []
    s.subscribe(got.append, ev.RetryScheduled)
    res = s.start().wait()
    deadline = time.monotonic() + 2.0
    while not got and time.monotonic() < deadline:  # callbacks run on the bus's thread
        time.sleep(0.01)
    assert got and got[-1].retries == 2 == int(res.telemetry["retries"].iloc[-1])
    assert [e.retries for e in got] == sorted({e.retries for e in got})  # only when it grew
    rows = res.events[res.events["kind"] == "RetryScheduled"]
    assert json.loads(rows["payload"].iloc[-1]) == {"retries": 2}


def test_diagnostic_events_are_exported() -> None:
    # HostDiscovered is published by discovery (tests/net/test_discovery_events.py).
    assert {"HostDiscovered", "RateLimited", "RetryScheduled"} <= set(ev.__all__)
