"""PanelState, with no widget and no browser: real scans of the lab, start to finish."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from prtip_nb.errors import ScanError
from prtip_nb.widgets import PanelState

from .conftest import Target, open_fds, open_sockets, scan_threads


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Every test leaves no scan thread, no child process, no socket and no descriptor."""
    fds, sockets = open_fds(), open_sockets()
    yield
    deadline = time.monotonic() + 3
    while scan_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert scan_threads() == []
    assert psutil.Process().children() == []
    assert open_sockets() <= sockets
    # With no gc.collect(): a finished Scan, still referenced, has closed its worker
    # processes' pipes and files itself.
    assert open_fds() <= fds


def _open(state: PanelState) -> set[int]:
    return {p.port for p in state.open_ports}


def test_scan_to_completion(target: Target) -> None:
    state = PanelState(targets="127.0.0.1", ports=target.spec)
    assert state.result.ports.empty  # before any scan: an empty result, not an error
    seen: list[frozenset[str]] = []
    state.observe(lambda s, changed: seen.append(changed))
    state.start()
    res = state.wait(30)
    assert state.status == "completed" and not state.running
    assert state.progress is not None and state.progress.fraction == 1.0
    assert state.progress.done == state.progress.total == len(target.spec.split(","))
    assert _open(state) == target.open == set(res.open_ports["port"].astype(int))
    assert state.series.t and len(state.series.t) == len(state.series.pps)
    assert all(m > 10 for m in state.series.rss_mib)  # MiB of a real Python process
    assert state.result is res
    assert any("status" in c for c in seen) and any("ports" in c for c in seen)


def test_result_is_a_snapshot_while_running(target: Target, slow: dict[str, object],
                                             tmp_path: Path) -> None:
    # With output= the engine writes a part (and hands rows over) every 0.5 s; without it,
    # only every 65,536 verdicts (see the engine's RecordSink).
    state = PanelState(targets="127.0.0.1", output=str(tmp_path), **slow)  # type: ignore[arg-type]
    state.start()
    try:
        time.sleep(1.2)
        snap = state.result
        assert state.running and snap.ended is None
        assert 0 < len(snap.ports) < state.progress.total  # type: ignore[union-attr]
    finally:
        state.stop()
        state.wait(5)


def test_stop_within_a_second_keeps_partial_results(target: Target, slow: dict[str, object],
                                                     ) -> None:
    state = PanelState(targets="127.0.0.1", **slow)  # type: ignore[arg-type]
    state.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    state.stop()
    res = state.wait(5)
    took = time.monotonic() - t0
    assert took < 1.0, took
    assert state.status == "cancelled"
    assert state.progress is not None and 0 < state.progress.done < state.progress.total
    assert len(res.ports) == state.progress.done  # every verdict so far is kept
    assert state.result is res


def test_start_while_running_is_refused(target: Target, slow: dict[str, object]) -> None:
    state = PanelState(targets="127.0.0.1", **slow)  # type: ignore[arg-type]
    state.start()
    try:
        with pytest.raises(ScanError, match="still running"):
            state.start()
    finally:
        state.stop()
        state.wait(5)
    state.set("ports", target.spec)  # once it has ended, the same panel scans again
    state.set("rate", "")
    state.start()
    state.wait(30)
    assert state.runs == 2 and _open(state) == target.open


def test_views_are_called_at_most_ten_times_a_second(target: Target,
                                                      slow: dict[str, object]) -> None:
    state = PanelState(targets="127.0.0.1", **slow)  # type: ignore[arg-type]
    calls: list[tuple[float, frozenset[str]]] = []
    state.observe(lambda s, changed: calls.append((time.monotonic(), changed)))
    state.start()
    state.wait(30)
    # Scan-driven calls (not the forced ones for Start and the scan's end) are >= 100 ms
    # apart; the forced end is the last call.
    driven = [t for t, changed in calls[1:-1]]
    gaps = [b - a for a, b in zip(driven, driven[1:], strict=False)]
    assert gaps and min(gaps) >= PanelState.RENDER_INTERVAL * 0.95, gaps
    assert "status" in calls[-1][1] and state.status == "completed"


def test_several_panels_at_once(target: Target) -> None:
    states = [PanelState(targets="127.0.0.1", ports=target.spec, rate=200.0) for _ in range(3)]
    for s in states:
        s.start()
    assert all(s.running for s in states)
    for s in states:
        s.wait(30)
    assert [s.status for s in states] == ["completed"] * 3
    assert all(_open(s) == target.open for s in states)
    assert len({s.scan.scan_id for s in states if s.scan}) == 3


@pytest.mark.usefixtures("sigint_not_ignored")
def test_interrupted_wait_cancels_and_cleans_up(target: Target, slow: dict[str, object]) -> None:
    """Ctrl-C (the kernel's interrupt) in wait(): the scan stops, threads and sockets close."""
    state = PanelState(targets="127.0.0.1", **slow)  # type: ignore[arg-type]
    state.start()
    # A real SIGINT, as the kernel's interrupt sends (interrupt_main() would not wake a
    # thread blocked in join()).
    timer = threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        state.wait(30)
    timer.join()
    assert state.status == "cancelled" and not state.running
    assert len(state.result.ports) > 0


def test_a_failing_start_is_shown(target: Target) -> None:
    state = PanelState(targets="127.0.0.1", ports="T:80,U:53")  # connect scans are TCP only
    with pytest.raises(ScanError.__mro__[1]):  # a PrtipError: ConfigError from Scan()
        state.start()
    assert "UDP" in " ".join(state.errors.values())
    assert state.scan is None


def test_open_ports_arrive_while_a_big_scan_runs(target: Target, slow: dict[str, object],
                                                  ) -> None:
    state = PanelState(targets="127.0.0.1", **slow)  # type: ignore[arg-type]
    state.start()
    try:
        deadline = time.monotonic() + 2.0
        while not state.open_ports and time.monotonic() < deadline:
            time.sleep(0.05)
        seen, running = len(state.open_ports), state.running
    finally:
        state.stop()
        state.wait(5)
    assert running and seen
