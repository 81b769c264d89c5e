"""Scan ids, with nothing but the standard library: ``prtip-nb scan -sL`` names its scan
without loading pyarrow (``results.meta`` re-exports ``new_scan_id``). os.urandom, not
``secrets`` (the same bytes; secrets loads hmac, hashlib and base64: ~3 ms a process)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

__all__ = ["new_scan_id"]


def new_scan_id() -> str:
    """A new scan id, e.g. ``20261128T101500Z-ab12cd``.

    The UTC time first so that ids (and the ``scan_id=`` directories) sort by start time;
    the random suffix keeps two scans started in the same second apart.
    """
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()
