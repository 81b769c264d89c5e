"""Every notebook in notebooks/ runs top to bottom, headless, with no edits, in under 60 s."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.conftest import in_netns, need

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def execute(nb: nbformat.NotebookNode, cwd: Path) -> tuple[float, list[dict[str, object]]]:
    """Run ``nb`` in a fresh kernel; return the time it took and its error outputs."""
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3",
        # Widget state is not kept: a FigureWidget carries ~5 MB of JavaScript into it.
        store_widget_state=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    t0 = time.monotonic()
    client.execute()
    took = time.monotonic() - t0
    errors = [
        out for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if out.get("output_type") == "error"
    ]
    return took, errors


def text_of(nb: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for out in c.get("outputs", []))


def outputs(nb: nbformat.NotebookNode, mime: str) -> int:
    return sum(mime in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRTIP_NB_DATA", str(tmp_path / "scans"))
    if path.name.startswith("06_"):  # its lab of hosts: veth pairs and a second namespace
        need(os.geteuid() == 0 and in_netns(), "notebook 06 needs root in a private namespace")
    nb = nbformat.read(path, as_version=4)
    took, errors = execute(nb, path.parent)
    assert not errors, errors
    assert took < 60, f"{path.name} took {took:.1f} s"
    assert outputs(nb, "application/vnd.plotly.v1+json") >= 1, "every notebook draws a chart"
    if path.name.startswith("01_"):
        assert len(os.listdir(tmp_path / "scans")) >= 1  # it stored at least one scan
        assert (tmp_path / "quickstart-report.html").stat().st_size > 1_000_000  # plotly.js in
        assert outputs(nb, "application/vnd.jupyter.widget-view+json") == 1  # the panel
    if path.name.startswith("05_"):
        assert len(os.listdir(tmp_path / "history")) == 5 + 3  # five scans, three nmap imports
        assert "<ScanResult 8 scans" in text_of(nb)  # the inventory cells ran on all of them
    if path.name.startswith("06_"):
        text = text_of(nb)
        assert "24 addresses, 7 up" in text and "42 UDP ports of 198.51.100.10" in text
        if shutil.which("nmap"):  # the side-by-side tables, host by host and port by port
            assert "same up/down verdict for 24 of 24" in text
            assert "same state for 42 of 42 ports" in text
        assert not [n for _i, n in socket.if_nameindex() if n.startswith("pl")]  # lab gone


def test_teaching_notebook_without_capture_privileges(tmp_path: Path) -> None:
    """Without root, notebook 02 reads its recorded packets instead of capturing."""
    path = next(p for p in NOTEBOOKS if p.name.startswith("02_"))
    nb = nbformat.read(path, as_version=4)
    setup = next(c for c in nb.cells if c.cell_type == "code" and "LIVE = " in c.source)
    setup.source = setup.source.replace("LIVE = is_privileged()", "LIVE = False")
    took, errors = execute(nb, path.parent)
    assert not errors, errors
    text = text_of(nb)
    assert "recorded earlier" in text and "filtered" in text


def test_lab_notebook_says_how_to_run_it() -> None:
    """Without root in a private namespace, notebook 06 stops in its first code cell and
    says how to start Jupyter; it builds nothing."""
    path = next(p for p in NOTEBOOKS if p.name.startswith("06_"))
    nb = nbformat.read(path, as_version=4)
    setup = next(c for c in nb.cells if c.cell_type == "code" and "PRIVATE = " in c.source)
    line = next(ln for ln in setup.source.splitlines() if ln.startswith("PRIVATE = "))
    setup.source = setup.source.replace(line, "PRIVATE = False")
    with pytest.raises(CellExecutionError) as err:
        execute(nb, path.parent)
    assert "needs root inside a private network namespace" in str(err.value)
    assert "sudo scripts/netns-kernel" in str(err.value)
    ran = [c for c in nb.cells if c.cell_type == "code" and c.get("outputs")]
    assert len(ran) == 1  # nothing after the check ran


def test_netns_kernel_script_installs_a_working_kernel(tmp_path: Path) -> None:
    """scripts/netns-kernel's kernel starts through scripts/in-netns and answers a client
    over Unix sockets (transport=ipc: what lets a server outside the namespace reach it)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    need(os.geteuid() == 0 or os.environ.get("PRTIP_NB_NETNS") == "1",
         "scripts/in-netns needs root (or to run inside it)")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"  # this venv's python, as the script will name it
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    script = Path(__file__).resolve().parents[2] / "scripts" / "netns-kernel"
    done = subprocess.run([str(script), str(venv)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    specs = KernelSpecManager(kernel_dirs=[str(venv / "share" / "jupyter" / "kernels")])
    spec = specs.get_kernel_spec("prtip-netns")
    assert spec.argv[0].endswith("scripts/in-netns")
    km = KernelManager(kernel_name="prtip-netns", kernel_spec_manager=specs, transport="ipc",
                       ip=str(tmp_path / "kernel"))
    km.start_kernel()
    kc = km.client()
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        seen: list[str] = []
        kc.execute_interactive(
            "import os; print(os.environ.get('PRTIP_NB_NETNS'))", timeout=30,
            output_hook=lambda m: seen.append(m["content"].get("text", "")))
        assert "".join(seen).strip() == "1"  # it runs under scripts/in-netns
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
