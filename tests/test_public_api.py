"""The public API is exactly ``prtip_nb.__all__``, sorted, and every name resolves."""

from __future__ import annotations

import subprocess
import sys

import prtip_nb


def test_all_is_sorted_and_resolves() -> None:
    names = prtip_nb.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(prtip_nb, name) is not None, name


def test_public_names_only() -> None:
    public = {n for n in dir(prtip_nb) if not n.startswith("_")}
    submodules = {"errors", "config", "engine", "results", "targets", "net", "lab", "cli",
                  "_version", "demo", "report", "interop", "probes", "service", "reporting", "viz",
                  "widgets", "osdetect"}
    assert public - submodules - {"annotations", "importlib", "TYPE_CHECKING", "Any"} <= set(
        prtip_nb.__all__
    )


def test_import_is_light() -> None:
    """`import prtip_nb` loads no pandas, pyarrow, scapy, plotly or ipywidgets."""
    code = (
        "import sys, prtip_nb; heavy = [m for m in ('pandas', 'pyarrow', 'scapy', 'plotly', "
        "'ipywidgets', 'numpy') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
