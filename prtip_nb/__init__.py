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
    PortSpecError,
    PrivilegeError,
    PrtipError,
    ScanCancelled,
    ScanError,
    SpecError,
    TargetSpecError,
)

if TYPE_CHECKING:
    from . import profile
    from .config import ScanConfig, Timing
    from .engine.events import Progress
    from .engine.scan import Scan, scan
    from .lab import Lab
    from .results import ScanResult, list_scans, read_scans
    from .targets import PortSet, TargetSet, parse_ports, parse_targets

__all__ = [
    "ConfigError",
    "DatasetError",
    "Lab",
    "PortSet",
    "PortSpecError",
    "PrivilegeError",
    "Progress",
    "PrtipError",
    "Scan",
    "ScanCancelled",
    "ScanConfig",
    "ScanError",
    "ScanResult",
    "SpecError",
    "TargetSet",
    "TargetSpecError",
    "Timing",
    "__version__",
    "list_scans",
    "parse_ports",
    "parse_targets",
    "profile",
    "read_scans",
    "scan",
]

_LAZY: dict[str, str] = {
    "Lab": ".lab",
    "PortSet": ".targets",
    "Progress": ".engine.events",
    "Scan": ".engine.scan",
    "ScanConfig": ".config",
    "ScanResult": ".results",
    "TargetSet": ".targets",
    "Timing": ".config",
    "list_scans": ".results",
    "parse_ports": ".targets",
    "parse_targets": ".targets",
    "read_scans": ".results",
    "scan": ".engine.scan",
}


#: Public submodules, also loaded on first use: ``pn.profile.run(...)``.
_SUBMODULES: dict[str, str] = {
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
