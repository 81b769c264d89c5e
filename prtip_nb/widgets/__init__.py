"""Notebook widgets: thin ipywidgets views over plain state objects.

- ``PanelState`` (``state.py``): the scan form, the running scan and what it found; no
  widget library needed, so it is tested without a browser.
- ``ScanPanel`` (``panel.py``): renders a PanelState with ipywidgets and one plotly
  FigureWidget. Also ``pn.ScanPanel``.
- ``ScanInterrupted``: what ``wait()`` raises when the kernel is interrupted (a
  KeyboardInterrupt that IPython shows as one line: cancelled, N rows kept).

ipywidgets and plotly are imported only when ``ScanPanel`` is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .panel import ScanPanel
    from .state import PanelState, ScanInterrupted

__all__ = ["PanelState", "ScanInterrupted", "ScanPanel"]

_LAZY = {"PanelState": ".state", "ScanInterrupted": ".state", "ScanPanel": ".panel"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prtip_nb.widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
