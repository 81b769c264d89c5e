"""Every notebook in notebooks/ runs top to bottom, headless, with no edits, in under 60 s."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

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


def outputs(nb: nbformat.NotebookNode, mime: str) -> int:
    return sum(mime in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRTIP_NB_DATA", str(tmp_path / "scans"))
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
        assert len(os.listdir(tmp_path / "history")) == 5


def test_teaching_notebook_without_capture_privileges(tmp_path: Path) -> None:
    """Without root, notebook 02 reads its recorded packets instead of capturing."""
    path = next(p for p in NOTEBOOKS if p.name.startswith("02_"))
    nb = nbformat.read(path, as_version=4)
    setup = next(c for c in nb.cells if c.cell_type == "code" and "LIVE = " in c.source)
    setup.source = setup.source.replace("LIVE = is_privileged()", "LIVE = False")
    took, errors = execute(nb, path.parent)
    assert not errors, errors
    text = "".join(out.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for out in c.get("outputs", []))
    assert "recorded earlier" in text and "filtered" in text
