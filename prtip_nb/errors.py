"""One exception tree for prtip_nb.

    PrtipError                    every error this package raises on purpose
    ├── SpecError                 bad user input, found before anything is sent
    │   ├── TargetSpecError       a target, CIDR, range, hostname, -iL file or exclusion
    │   ├── PortSpecError         a port list, range, T:/U: prefix or --top-ports value
    │   └── ConfigError           an option of ScanConfig (rate, timing, method, ...)
    ├── PrivilegeError            raw sockets or namespaces need root / CAP_NET_RAW
    ├── ScanError                 the scan itself failed (socket errors, worker died, ...)
    │   └── ScanCancelled         the scan was cancelled; ``partial`` holds what it found
    ├── DatasetError              a Parquet dataset is missing, empty or of another schema
    └── FileFormatError           a file to import (nmap XML, masscan) is malformed or of a
                                  format not supported; the message names file and line

Every error names what was wrong and how to fix it. ``OSError`` from sockets is translated
at the socket boundary (``prtip_nb.net``), never deeper.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DatasetError",
    "FileFormatError",
    "PortSpecError",
    "PrivilegeError",
    "PrtipError",
    "ScanCancelled",
    "ScanError",
    "SpecError",
    "TargetSpecError",
]


class PrtipError(Exception):
    """Base class of every error that prtip_nb raises on purpose."""


class SpecError(PrtipError, ValueError):
    """Bad user input, detected before any packet is sent.

    ``token`` is the offending piece of input; ``hint`` shows the valid form.
    """

    def __init__(self, message: str, *, token: str | None = None, hint: str | None = None):
        self.token = token
        self.hint = hint
        text = message
        if hint:
            text = f"{message}. {hint}"
        super().__init__(text)


class TargetSpecError(SpecError):
    """A target specification could not be parsed or resolved, or named nothing."""


class PortSpecError(SpecError):
    """A port specification could not be parsed."""


class ConfigError(SpecError):
    """A scan option is out of range or inconsistent with another."""


class PrivilegeError(PrtipError, PermissionError):
    """The operation needs privileges that this process does not have."""


class ScanError(PrtipError, RuntimeError):
    """The scan could not run to completion."""


class ScanCancelled(ScanError):
    """The scan was cancelled. ``partial`` is the ScanResult of what was found before."""

    def __init__(self, message: str = "scan cancelled", *, partial: Any = None):
        self.partial = partial
        super().__init__(message)


class DatasetError(PrtipError, OSError):
    """A scan dataset could not be read or written."""


class FileFormatError(PrtipError, ValueError):
    """A file given to import is not what it claims, or is damaged: the message names the
    file and, where there is one, the line; ``prtip-nb import`` prints it, not a traceback."""
