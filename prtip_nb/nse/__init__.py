"""Scripts: Python checks that run after the port scan and -sV (what NSE is to nmap).

- ``api``: :class:`Script`, :func:`script`, :class:`Output`, :class:`Target`;
- ``context``: what a script may do (bounded connect, TLS, HTTP/1.1, send/recv);
- ``select``: where scripts come from (built-in, files, modules, the ``prtip_nb.scripts``
  entry point group) and nmap's ``--script`` selection and ``--script-args``;
- ``engine``: running them within their budgets, rows of the ``scripts`` table;
- ``prtip_nb.engine.nsestage``: the scan's hook (``Scan._run`` calls ``run_script_stage``
  after -sV);
- ``builtin``: the scripts that come with prtip_nb.

Layer: between ``engine`` and ``net`` (import-linter checks it). Nothing here is imported by
``import prtip_nb`` until scripts are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prtip_nb.nse.api import CATEGORIES, Output, Script, Target, script
    from prtip_nb.nse.context import BudgetExceeded, Conn, Context, HttpResponse, ScriptError
    from prtip_nb.nse.engine import Limits, run
    from prtip_nb.nse.select import ENTRY_POINT_GROUP, parse_args, registry, resolve

# Lazy, like prtip_nb itself: the CLI imports nse.text to add its flags, and a scan without
# scripts must not pay for asyncio, ssl and the script engine (5 MiB of RSS, measured).
_LAZY = {
    **dict.fromkeys(("CATEGORIES", "Output", "Script", "Target", "script"), "api"),
    **dict.fromkeys(("BudgetExceeded", "Conn", "Context", "HttpResponse", "ScriptError"),
                    "context"),
    **dict.fromkeys(("Limits", "run"), "engine"),
    **dict.fromkeys(("ENTRY_POINT_GROUP", "parse_args", "registry", "resolve"), "select"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"prtip_nb.nse.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'prtip_nb.nse' has no attribute {name!r}")


def list_scripts() -> list[dict[str, object]]:
    """Every known script (built-in and installed): id, categories, first docstring line."""
    return [{"id": s.id, "categories": list(s.categories),
             "description": (s.description or "").strip().split("\n")[0]}
            for s in __getattr__("registry")().values()]  # fmt: skip


__all__ = ["CATEGORIES", "ENTRY_POINT_GROUP", "BudgetExceeded", "Conn", "Context",
           "HttpResponse", "Limits", "Output", "Script", "ScriptError", "Target",
           "list_scripts", "parse_args", "registry", "resolve", "run", "script"]  # fmt: skip
