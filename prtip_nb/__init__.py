"""prtip_nb: a network port scanner built for Jupyter.

>>> import prtip_nb as pn
>>> res = pn.scan("127.0.0.1", ports="1-1024", method="connect")   # doctest: +SKIP
>>> res.ports                                                        # doctest: +SKIP

``import prtip_nb`` is light on purpose (no pandas, scapy, plotly or ipywidgets): the
names below load their modules on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ConfigError,
    DatasetError,
    FileFormatError,
    PortSpecError,
    PrivilegeError,
    PrtipError,
    ScanCancelled,
    ScanError,
    SpecError,
    TargetSpecError,
)

if TYPE_CHECKING:
    from . import nse, profile
    from . import viz as plot
    from .config import ScanConfig, Timing
    from .engine.discovery import Discovery, discover
    from .engine.events import Progress
    from .engine.resume import resume
    from .engine.scan import Scan, scan
    from .interop.diff import diff
    from .interop.masscan import read_masscan
    from .interop.nmap_xml import read_nmap_xml
    from .interop.sql import sql
    from .lab import Lab
    from .net.privileges import drop_privileges
    from .nse.api import Output, Script, script
    from .reporting import report
    from .results import ScanResult, list_scans, read_scans
    from .targets import PortSet, TargetSet, parse_ports, parse_targets
    from .widgets import ScanPanel

__all__ = [
    "ConfigError",
    "DatasetError",
    "Discovery",
    "FileFormatError",
    "Lab",
    "Output",
    "PortSet",
    "PortSpecError",
    "PrivilegeError",
    "Progress",
    "PrtipError",
    "Scan",
    "ScanCancelled",
    "ScanConfig",
    "ScanError",
    "ScanPanel",
    "ScanResult",
    "Script",
    "SpecError",
    "TargetSet",
    "TargetSpecError",
    "Timing",
    "__version__",
    "diff",
    "discover",
    "drop_privileges",
    "list_scans",
    "nse",
    "parse_ports",
    "parse_targets",
    "plot",
    "profile",
    "read_masscan",
    "read_nmap_xml",
    "read_scans",
    "report",
    "resume",
    "scan",
    "script",
    "sql",
]

_LAZY: dict[str, str] = {
    "Discovery": ".engine.discovery",
    "Lab": ".lab",
    "PortSet": ".targets",
    "Progress": ".engine.events",
    "Scan": ".engine.scan",
    "ScanConfig": ".config",
    "ScanPanel": ".widgets",
    "ScanResult": ".results",
    "Output": ".nse.api",
    "Script": ".nse.api",
    "script": ".nse.api",
    "TargetSet": ".targets",
    "Timing": ".config",
    "diff": ".interop.diff",
    "discover": ".engine.discovery",
    "drop_privileges": ".net.privileges",
    "list_scans": ".results",
    "parse_ports": ".targets",
    "parse_targets": ".targets",
    "read_masscan": ".interop.masscan",
    "read_nmap_xml": ".interop.nmap_xml",
    "read_scans": ".results",
    "report": ".reporting",
    "resume": ".engine.resume",
    "scan": ".engine.scan",
    "sql": ".interop.sql",
}


#: Public submodules, also loaded on first use: ``pn.profile.run(...)``, ``pn.plot.ports(res)``.
_SUBMODULES: dict[str, str] = {
    "nse": ".nse",
    "plot": ".viz",
    "profile": ".profile",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name], __name__)
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prtip_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
