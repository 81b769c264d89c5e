"""The panel in a real IPython kernel: the kernel stays responsive while a scan runs, and
interrupting it leaves no thread, socket or process behind."""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import in_netns
from .conftest import open_sockets

jupyter_client = pytest.importorskip("jupyter_client.manager")

# Run in the kernel: the same socket count as the in-process widget tests use.
SETUP = f"""
import os, threading, psutil
import prtip_nb as pn
from prtip_nb.lab import Lab
from prtip_nb.widgets.state import ScanInterrupted
lab = Lab.defaults(host="127.0.0.1", ephemeral=True).start()
LAB_PORTS = ",".join(map(str, lab.open_ports["tcp"] + lab.closed_ports))

{inspect.getsource(open_sockets)}
def leftovers():
    return {{"threads": [t.name for t in threading.enumerate()
                        if t.name.startswith("prtip-") and not t.name.startswith("prtip-lab")],
            "children": len(psutil.Process().children()), "sockets": open_sockets()}}
"""


class Kernel:
    def __init__(self) -> None:
        self.km, self.kc = jupyter_client.start_new_kernel(kernel_name="python3")

    def run(self, code: str, timeout: float = 60) -> dict[str, Any]:
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        if reply["content"]["status"] == "aborted":
            # After an error reply the kernel aborts what was queued behind it (Run All stops
            # there); a request sent the moment the reply arrived can still be caught by that
            # flush. An aborted request never ran, so sending it once more is safe.
            time.sleep(0.2)
            reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return {"status": reply["content"]["status"], "ename": reply["content"].get("ename"),
                "out": "".join(out)}

    def value(self, expr: str) -> Any:
        res = self.run(f"import json as _j; print(_j.dumps({expr}))")
        assert res["status"] == "ok", res
        return json.loads(res["out"].strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    """One kernel for the module (its start and first imports cost seconds): each test
    compares with what it measured itself before it began."""
    k = Kernel()
    try:
        assert k.run(SETUP)["status"] == "ok"
        yield k
    finally:
        k.kc.stop_channels()
        k.km.shutdown_kernel(now=True)


def _scan_args(rate: float | None) -> str:
    if in_netns():  # every port of the namespace's own loopback
        return f"ports='-', rate={rate!r}"
    return f"ports=LAB_PORTS, rate={10.0 if rate else None!r}"


@pytest.mark.serial
@pytest.mark.parametrize("rate", [None, 20_000.0], ids=["full-speed", "rate-limited"])
def test_kernel_answers_while_a_panel_scans(kernel: Kernel, rate: float | None) -> None:
    # Imports and first render; p.chart waits for plotly, which the panel loads on a thread
    # (about 3 s in a fresh kernel) so that ScanPanel() returns at once.
    kernel.run("p = pn.ScanPanel(targets='127.0.0.1', timing=4); p; p.chart")
    kernel.run(f"p = pn.ScanPanel(targets='127.0.0.1', {_scan_args(rate)}, timing=4); p.start()")
    latencies = []
    while True:
        t0 = time.perf_counter()
        assert kernel.run("1 + 1")["status"] == "ok"
        latencies.append(time.perf_counter() - t0)
        if not kernel.value("p.state.running") or len(latencies) > 200:
            break
        time.sleep(0.02)
    assert kernel.value("p.state.status") == "completed"
    assert len(latencies) >= 3, latencies
    assert max(latencies) <= 0.200, [round(x * 1000) for x in latencies]


def test_interrupting_the_kernel_leaves_nothing_behind(kernel: Kernel) -> None:
    before = kernel.value("leftovers()")
    kernel.run(f"p = pn.ScanPanel(targets='127.0.0.1', {_scan_args(20_000.0)})")
    # Blocks the kernel until interrupted. The interrupt goes once the scan runs and the
    # cell is in wait() (under load, start() alone took over a second in CI).
    msg_id = kernel.kc.execute("p.start(); print('waiting', flush=True); p.wait()")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = kernel.kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream" \
                and "waiting" in msg["content"]["text"]:
            break
    time.sleep(0.5)
    kernel.km.interrupt_kernel()
    reply = kernel.kc.get_shell_msg(timeout=10)
    while reply["parent_header"].get("msg_type") != "execute_request":
        reply = kernel.kc.get_shell_msg(timeout=10)
    assert reply["content"]["status"] == "error"
    # One line, not a traceback into threading; still a KeyboardInterrupt (Run All stops).
    assert reply["content"]["ename"] == "ScanInterrupted"
    assert kernel.value("issubclass(ScanInterrupted, KeyboardInterrupt)")
    shown = reply["content"]["traceback"]
    assert len(shown) == 1 and shown[0].startswith(
        "ScanInterrupted: scan cancelled by the interrupt; "), shown
    assert re.search(r"[\d,]+ port rows kept in panel\.result \([\d,]+ of [\d,]+ ports done\)",
                     shown[0]), shown
    after = kernel.value("leftovers()")
    assert after["threads"] == [] and after["children"] == 0
    assert after["sockets"] <= before["sockets"]
    state = kernel.value("[p.state.status, p.state.progress.done, p.state.progress.total]")
    assert state[0] == "cancelled" and 0 < state[1] < state[2]
    # The kernel is usable at once: the same panel scans again.
    kernel.run("p.state.set('rate', ''); p.state.set('ports', LAB_PORTS); p.start(); p.wait()")
    assert kernel.value("p.state.status") == "completed"


def test_interrupting_an_idle_kernel_does_not_truncate_a_background_scan(
    kernel: Kernel,
) -> None:
    """An idle kernel ignores the interrupt, which jupyter sends to the kernel's whole
    process group: a scan started from the panel goes on, worker processes included, even
    those still starting up (not yet able to ignore a SIGINT) when it arrives."""
    kernel.run(f"p = pn.ScanPanel(targets='127.0.0.1', {_scan_args(20_000.0)}); p.start()")
    kernel.km.interrupt_kernel()  # at once: the workers are starting
    time.sleep(0.5)
    kernel.km.interrupt_kernel()  # and once they scan
    assert kernel.run("p.wait()")["status"] == "ok"
    status, done, total = kernel.value(
        "[p.state.status, p.state.progress.done, p.state.progress.total]")
    assert status == "completed" and done == total
