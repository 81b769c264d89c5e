"""Every notebook in notebooks/ runs top to bottom, headless, with no edits."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRTIP_NB_DATA", str(tmp_path / "scans"))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    t0 = time.monotonic()
    client.execute()
    took = time.monotonic() - t0
    errors = [
        out for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if out.get("output_type") == "error"
    ]
    assert not errors
    assert took < 60, f"{path.name} took {took:.1f} s"
    if path.name.startswith("01_"):
        assert len(os.listdir(tmp_path / "scans")) >= 1  # it stored at least one scan
