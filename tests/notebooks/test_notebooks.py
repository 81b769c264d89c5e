"""Every notebook in notebooks/ runs top to bottom, headless, with no edits, in under 60 s,
twice: as root in a private namespace (scanning a lab of its own) and as user nobody
(reading data/sample). The second run costs about 5 s a notebook (a kernel's start and
the imports; it sends nothing)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

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


def check(nb: nbformat.NotebookNode, path: Path, out: Path, live: bool) -> None:
    """What every run of a notebook must show, live or from the sample data."""
    text = text_of(nb)
    assert outputs(nb, "application/vnd.plotly.v1+json") >= 1, "every notebook draws a chart"
    # The first code cell says which mode it runs in (prtip_nb.lab.notebook_mode).
    assert ("live: scanning this notebook's own lab" if live else "sample data from") in text
    head = nb.cells[0].source
    for part in ("You will learn", "Needs", "Runs in", "Authorisation"):
        assert part in head, f"{path.name}: its header lacks {part!r}"
    exercises = sum(c.source.count("### Predict, then run") for c in nb.cells
                    if c.cell_type == "markdown")
    answers = sum(c.source.count("<summary>Answer</summary>") for c in nb.cells
                  if c.cell_type == "markdown")
    assert 2 <= exercises <= 4 and answers == exercises, f"{path.name}: {exercises} exercises"
    for i, cell in enumerate(nb.cells):  # every chart is followed by what to look for in it
        if cell.cell_type == "code" and any("application/vnd.plotly.v1+json" in o.get("data", {})
                                            for o in cell.get("outputs", [])):
            after = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
            assert after is not None and after.cell_type == "markdown" and "Look for" in (
                after.source), f"{path.name}: no 'Look for' after the chart of {cell.source!r}"
    name = path.name
    if name.startswith("02_"):  # the OS-detection section: its own -O scan, or the recording
        live_os = live and shutil.which("nmap") is not None
        assert ("-O on 3 hosts" if live_os else "the recorded -O run of") in text
        assert "differ between the stacks" in text and "'M5B4'" in text
    if name.startswith("01_"):
        assert (out / "quickstart-report.html").stat().st_size > 1_000_000  # plotly.js in
        assert outputs(nb, "application/vnd.jupyter.widget-view+json") == 1  # the panel
        if live:
            assert len(os.listdir(out / "scans")) >= 1  # it stored at least one scan
    if name.startswith("05_"):
        assert (out / "changes-report.html").stat().st_size > 1_000_000
        assert "<ScanResult" in text  # the inventory cells ran
        if live:
            assert len(os.listdir(out / "history")) == 5 + 3  # five scans, three nmap imports
    if name.startswith("06_"):
        assert "24 addresses, 7 up" in text and "42 UDP ports of 198.51.100.10" in text
        if live and shutil.which("nmap") or not live:  # the side-by-side tables
            assert "same up/down verdict for 24 of 24" in text
            assert "same state for 42 of 42 ports" in text
        assert not [n for _i, n in socket.if_nameindex() if n.startswith("pl")]  # lab gone


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_as_root_on_its_own_lab(
        path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root in a private namespace: each notebook scans a lab it builds itself."""
    need(os.geteuid() == 0 and in_netns(), "the notebooks scan only as root in a private "
         "namespace: run under scripts/in-netns as root")
    monkeypatch.setenv("PRTIP_NB_DATA", str(tmp_path / "scans"))
    monkeypatch.delenv("PRTIP_NB_MODE", raising=False)
    nb = nbformat.read(path, as_version=4)
    took, errors = execute(nb, path.parent)
    assert not errors, errors
    assert took < 60, f"{path.name} took {took:.1f} s"
    check(nb, path, tmp_path, live=True)


# What a notebook reads besides itself, copied for a user who cannot read the checkout.
COPY = ["notebooks", "data/sample", "prtip_nb", "tests/data/nmap"]
RUNNER = """
import sys, time, nbformat
from nbclient import NotebookClient
src, dst, cwd = sys.argv[1:]
nb = nbformat.read(src, as_version=4)
t0 = time.monotonic()
try:
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": cwd}}).execute()
finally:
    nb.metadata["took"] = time.monotonic() - t0
    nbformat.write(nb, dst)
"""


@pytest.fixture(scope="module")
def nobody_copy() -> Iterator[Path]:
    """A copy of what the notebooks read, owned by nobody (the checkout may be in /root)."""
    need(os.geteuid() == 0 and shutil.which("setpriv") is not None,
         "running a notebook as an unprivileged user needs root and setpriv (util-linux)")
    work = Path(tempfile.mkdtemp(prefix="prtip-nobody-"))
    root = Path(__file__).resolve().parents[2]
    for rel in COPY:
        shutil.copytree(root / rel, work / rel, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["chown", "-R", "nobody:nogroup", str(work)], check=True)
    work.chmod(0o755)
    global AS_NOBODY
    probe = subprocess.run([*AS_NOBODY, sys.executable, "-c", PROBE],
                           capture_output=True, text=True, cwd=work, env={"HOME": str(work)})
    if probe.returncode != 0:
        # The interpreter may live where nobody cannot look (pyenv under /root, mode 700):
        # then the user gets one capability, to read any file, and nothing for the network.
        AS_NOBODY = [*AS_NOBODY_BASE, "--inh-caps=-all,+dac_read_search",
                     "--ambient-caps=+dac_read_search", "--bounding-set=-all,+dac_read_search"]
        probe = subprocess.run([*AS_NOBODY, sys.executable, "-c", PROBE],
                               capture_output=True, text=True, cwd=work, env={"HOME": str(work)})
    assert probe.returncode == 0, (
        f"user nobody cannot run {sys.executable}: " + probe.stderr[-500:])
    yield work
    shutil.rmtree(work, ignore_errors=True)


AS_NOBODY_BASE = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
AS_NOBODY = AS_NOBODY_BASE
# The kernel is a child process: the user must be able to start the interpreter again.
PROBE = ("import subprocess, sys; "
         "subprocess.run([sys.executable, '-c', 'import nbclient'], check=True)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_as_an_unprivileged_user_from_the_sample_data(
        path: Path, nobody_copy: Path) -> None:
    """As user nobody (no root, no raw sockets, no namespaces) every notebook reads
    data/sample instead of scanning, and says so."""
    work = nobody_copy
    out = work / "out" / path.stem
    out.mkdir(parents=True)
    subprocess.run(["chown", "nobody:nogroup", str(out), str(out.parent)], check=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(out),
           "PYTHONPATH": str(work), "PRTIP_NB_DATA": str(out / "scans"),
           "JUPYTER_RUNTIME_DIR": str(out / "runtime"), "LANG": "C.UTF-8"}
    done_path = out / "executed.ipynb"
    nb_path = work / "notebooks" / path.name
    run = subprocess.run([*AS_NOBODY, sys.executable, "-c", RUNNER, str(nb_path), str(done_path),
                          str(nb_path.parent)],
                         capture_output=True, text=True, env=env, cwd=out, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    nb = nbformat.read(done_path, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    assert nb.metadata["took"] < 60, f"{path.name} took {nb.metadata['took']:.1f} s"
    check(nb, path, out, live=False)


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
