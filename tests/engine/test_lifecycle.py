"""The one scan lifecycle (engine.lifecycle): start, cancel, wait, join, result and the
terminal event, and the one rule for what ``wait()`` raises, for ``Scan`` and
``DistributedScan`` alike.

``Toy`` is a lifecycle whose run is a loop on this machine's clock (no socket): what these
tests prove is the lifecycle's order and its errors, which a real scan then inherits; the
real scans' tests (test_resume, test_udp_shards, test_distributed) run it against sockets.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import prtip_nb as pn
from prtip_nb.engine.checkpoint import RunPlan
from prtip_nb.engine.distributed import DistributedScan
from prtip_nb.engine.events import ScanCancelled, ScanCompleted, ScanFailed, ScanStarted
from prtip_nb.engine.lifecycle import Lifecycle, raise_failure
from prtip_nb.engine.scan import Scan
from prtip_nb.errors import ConfigError, DatasetError, PrivilegeError, ScanError
from prtip_nb.net.counters import Counters


class Toy(Lifecycle):
    """Counts to ``n`` (1 ms a step) unless cancelled; ``fail`` is raised at step 3."""

    def __init__(self, n: int = 20, fail: BaseException | None = None,
                 fail_conclude: BaseException | None = None) -> None:
        super().__init__()
        self.counters = Counters(total=n)
        self.n, self.fail, self.fail_conclude = n, fail, fail_conclude
        self.calls: list[str] = []
        self.recorded: list[str] = []

    @property
    def scan_id(self) -> str | None:
        return "toy"

    def _begin(self) -> ScanStarted:
        self.calls.append("begin")
        self._t0 = time.monotonic()
        return ScanStarted(0.0, "toy", self.n, ("t",), "1", "toy")

    def _execute(self) -> None:
        self.calls.append("execute")
        for i in range(self.n):
            if self._cancel.is_set():
                return
            if i == 3 and self.fail is not None:
                raise self.fail
            self.counters.done += 1
            time.sleep(0.001)

    def _wind_down(self) -> None:
        self.calls.append("wind_down")

    def _conclude(self) -> Any:
        self.calls.append(f"conclude:{self.status}")
        if self.fail_conclude is not None:
            raise self.fail_conclude
        return {"done": self.counters.done}

    def _closed(self) -> None:
        self.calls.append("closed")

    def _snapshot(self) -> Any:
        return {"so_far": self.counters.done}

    def _record(self, ev: Any) -> None:
        self.recorded.append(ev.kind)


def test_a_run_goes_through_the_hooks_in_order_and_ends_with_its_terminal_event() -> None:
    toy = Toy()
    seen = toy.events()
    assert toy.start() is toy and toy.wait(5) == {"done": 20}
    assert toy.status == "completed" and not toy.running and toy.error is None
    assert toy.calls == ["begin", "execute", "wind_down", "conclude:completed", "closed"]
    kinds = [ev.kind for ev in seen]  # ends after the terminal event
    assert kinds[0] == "ScanStarted" and kinds[-1] == "ScanCompleted"
    assert toy.recorded == ["ScanStarted", "ScanCompleted"]  # recorded before the result
    assert toy.progress.done == 20 and toy.progress.total == 20


def test_wait_starts_a_scan_and_a_second_start_is_refused() -> None:
    toy = Toy()
    assert toy.wait(5) == {"done": 20}  # wait() on a created scan starts it
    with pytest.raises(ScanError, match="already started"):
        toy.start()


def test_cancel_keeps_the_partial_result_and_join_never_raises() -> None:
    toy = Toy(n=100_000)
    assert toy.join(0.01) is False  # not started: nothing to wait for
    got: list[Any] = []
    toy.subscribe(got.append, (ScanCancelled, ScanCompleted))
    toy.start()
    assert toy.join(0.01) is False and toy.running
    toy.cancel()
    assert toy.cancel_event.is_set() and toy.join(5) is True
    res = toy.wait()
    assert toy.status == "cancelled" and 0 < res["done"] < 100_000
    toy.bus.close(timeout=2.0)
    assert [type(e) for e in got] == [ScanCancelled]


def test_result_is_a_snapshot_while_running() -> None:
    toy = Toy(n=100_000).start()
    assert "so_far" in toy.result
    toy.cancel()
    assert "done" in toy.wait(5)


@pytest.mark.parametrize("error", [
    PrivilegeError("needs CAP_NET_RAW: setcap cap_net_raw+ep"),
    ScanError("a scan worker exited with -9"),
])
def test_privilege_and_scan_errors_are_raised_as_they_are(error: Exception) -> None:
    toy = Toy(fail=error)
    with pytest.raises(type(error)) as info:
        toy.wait(5)
    assert info.value is error and toy.status == "failed" and toy.error is error
    assert toy.recorded[-1] == "ScanFailed"


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), ValueError("bad"),
                                   DatasetError("cannot write part")])
def test_other_errors_become_a_scan_error_with_their_cause(error: Exception) -> None:
    toy = Toy(fail=error)
    with pytest.raises(ScanError, match="scan failed") as info:
        toy.wait(5)
    assert info.value.__cause__ is error and not isinstance(info.value, PrivilegeError)


def test_a_failure_to_conclude_fails_the_scan_and_its_terminal_event_says_so() -> None:
    toy = Toy(fail_conclude=OSError(28, "No space left on device"))
    got: list[Any] = []
    toy.subscribe(got.append, (ScanCompleted, ScanFailed))
    with pytest.raises(ScanError, match="No space left"):
        toy.wait(5)
    toy.bus.close(timeout=2.0)
    assert toy.status == "failed" and [type(e) for e in got] == [ScanFailed]


def test_raise_failure_is_the_one_rule() -> None:
    e = PrivilegeError("x")
    with pytest.raises(PrivilegeError):
        raise_failure(e)
    with pytest.raises(ScanError) as info:
        raise_failure(KeyError("k"))
    assert isinstance(info.value.__cause__, KeyError)


def test_scan_distributed_scan_and_discovery_share_the_lifecycle() -> None:
    from prtip_nb.engine.discovery import Discovery

    for cls in (Scan, DistributedScan, Discovery):
        assert issubclass(cls, Lifecycle)
        for name in ("start", "cancel", "wait", "join", "result", "events", "subscribe",
                     "progress", "cancel_event", "started_at", "_main", "_terminal"):
            assert getattr(cls, name) is getattr(Lifecycle, name), (cls, name)


def test_apply_plan_carries_the_engine_state_and_comes_before_start() -> None:
    s = Scan("198.51.100.1", ports="80,443", method="connect")  # parse-only: never started
    total = s.counters.total
    s.apply_plan(RunPlan(scan_id="x", start=1, resume=True,
                         engine_state={"syn_secret": "00" * 16}))
    assert s.plan.start == 1 and s.counters.total == total - 1
    assert s.engine_state == {"syn_secret": "00" * 16}
    started = Scan("127.0.0.1", ports="1", method="connect").start()  # the suite's netns
    with pytest.raises(ScanError, match="before start"):
        started.apply_plan(RunPlan())  # the plan is fixed once the scan runs
    assert started.wait(10).ports.shape[0] == 1


def test_distributed_apply_plan_sets_the_scan_and_its_shards() -> None:
    ds = DistributedScan("198.51.100.0/30", "80", method="connect", shards=2, seed=1)
    ds.apply_plan(RunPlan(scan_id="20261206T000000Z-abcdef", resume=True),
                  [{"index": 1, "status": "completed", "low_water": 4},
                   {"index": 2, "status": "running", "low_water": 1}])
    assert ds.scan_id == "20261206T000000Z-abcdef"
    assert ds.resume_entry(2)["low_water"] == 1 and ds.resume_entry(3) == {}


def test_a_dask_checkpoint_resumes_as_a_distributed_scan_through_scan_resume(
    tmp_path: Path,
) -> None:
    """One way to resume: Scan.resume decides the distributed case inside. The scan is
    planned (never started here: 198.51.100.0/30 is parse-only)."""
    ds = DistributedScan("198.51.100.0/30", "80,443", method="connect", shards=2, seed=7,
                         output=str(tmp_path))
    ds.apply_plan(RunPlan(scan_id="20261206T000000Z-abcdef", started=datetime.now(UTC)))
    from prtip_nb.engine import _dmerge

    _dmerge.write_manifest(ds, "cancelled")  # what a cancelled Dask scan leaves
    again = pn.Scan.resume(tmp_path, "20261206T000000Z-abcdef", rate=100)
    assert isinstance(again, DistributedScan) and again.status == "created"
    assert again.scan_id == "20261206T000000Z-abcdef" and again.n == 2
    assert again.config.rate == 100 and again.config.seed == 7
    with pytest.raises(ConfigError, match="keeps its ports"):
        pn.Scan.resume(tmp_path, "20261206T000000Z-abcdef", ports="1-10")
