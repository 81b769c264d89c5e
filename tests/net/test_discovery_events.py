"""Discovery publishes events and telemetry like any scan (issue 14): a subscriber of a
real sweep on a veth lab receives a HostDiscovered for each host up, as the result says,
then the terminal event; the events and telemetry tables record the run."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

import prtip_nb as pn
from prtip_nb.engine import events as ev
from prtip_nb.lab.veth import VethLab, host
from tests.conftest import need

pytestmark = pytest.mark.usefixtures("netns", "root")

ON = [host("onlink", 10), host("onlink", 11), host("onlink", 10, 6)]
ROUTED = [host("routed", 5), host("routed", 5, 6)]
TARGETS = ["198.51.100.8-15", "203.0.113.4-6", "2001:db8::8/125", "2001:db8:1::5"]


def test_a_subscriber_receives_host_discovered_from_a_real_sweep() -> None:
    need(shutil.which("nsenter") is not None, "needs nsenter")
    with VethLab(up=ON, routed_up=ROUTED, tcp=[443]):
        d = pn.Discovery(TARGETS, telemetry_interval=0.05, max_retries=1)
        got: list[ev.HostDiscovered] = []
        ended = threading.Event()
        d.subscribe(got.append, ev.HostDiscovered)
        d.subscribe(lambda e: ended.set(), (ev.ScanCompleted, ev.ScanFailed))
        stream = d.events((ev.ScanStarted, ev.StageChanged, ev.HostDiscovered))
        res = d.start().wait()
        assert ended.wait(5.0)  # callbacks run on the bus's thread; the terminal comes last
        seen = list(stream)
    hosts = res.hosts
    up = hosts[hosts["state"] == "up"]
    want = {(h, r) for h, r in zip(up["host"], up["reason"].astype(str), strict=True)}
    assert want == {*((a, "arp-response") for a in ON[:2]), (ON[2], "nd-response"),
                    (ROUTED[0], "echo-reply"), (ROUTED[1], "echo-reply")}
    assert {(e.host, e.reason) for e in got} == want
    assert len(got) == len(want)  # one each: the answered bitmap dedups
    for e in got:
        assert e.scan_id == res.scan_id and e.family == (6 if ":" in e.host else 4)
        assert e.rtt_ms is not None and 0 <= e.rtt_ms < 1000
    # The iterator saw the start, the stage, the hosts, and ended on the terminal event.
    kinds = [e.kind for e in seen]
    assert kinds[:2] == ["ScanStarted", "StageChanged"] and kinds[-1] == "ScanCompleted"
    assert kinds.count("HostDiscovered") == len(want)
    started = seen[0]
    assert isinstance(started, ev.ScanStarted) and started.method == "discovery"
    assert started.total == hosts.shape[0] == 20
    # Recorded like a port scan's: in the events table and the telemetry.
    table = res.events
    rows = table[table["kind"] == "HostDiscovered"]
    assert {json.loads(p)["host"] for p in rows["payload"]} == {h for h, _ in want}
    assert {"ScanStarted", "StageChanged", "DiscoveryCompleted", "ScanCompleted"} <= set(
        table["kind"])
    tel = res.telemetry
    assert len(tel) >= 1 and int(tel["sent"].iloc[-1]) == d.counters.sent > 0
    assert int(tel["open"].iloc[-1]) == len(want)  # hosts up (none of ours is a target)


def test_a_cancelled_sweep_ends_cancelled() -> None:
    """Cancel while the silent hosts of a routed /26 wait out their rounds."""
    need(shutil.which("nsenter") is not None, "needs nsenter")
    with VethLab(routed_up=ROUTED):
        d = pn.Discovery("203.0.113.0/26", max_retries=3, timing=2)
        ends: list[ev.Event] = []
        d.subscribe(ends.append, (ev.ScanCompleted, ev.ScanCancelled))
        d.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        d.cancel()
        res = d.wait(10)
        assert time.monotonic() - t0 < 2.0
    deadline = time.monotonic() + 2.0
    while not ends and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [e.kind for e in ends] == ["ScanCancelled"]
    assert res.events["kind"].iloc[-1] == "ScanCancelled"
