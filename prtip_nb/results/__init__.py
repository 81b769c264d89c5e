"""Scan results: the Arrow schema, the builder the engine fills, ScanResult, Parquet datasets.

Importing this package does not import pandas; reading a DataFrame property does.
"""

from __future__ import annotations

from prtip_nb.results import schema
from prtip_nb.results.builder import ResultBuilder
from prtip_nb.results.dataset import list_scans, read_scans
from prtip_nb.results.meta import ScanMeta, new_scan_id
from prtip_nb.results.result import ScanResult

__all__ = [
    "ResultBuilder",
    "ScanMeta",
    "ScanResult",
    "list_scans",
    "new_scan_id",
    "read_scans",
    "schema",
]
