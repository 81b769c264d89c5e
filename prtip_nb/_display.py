"""Values as a person reads them: the report's tables and summary, and the panel's text.

One place decides how a number, a time or a missing value is written, so the HTML report,
its summary and the notebook agree: thousands separators on counts (never on port
numbers: nmap writes ``8080/tcp``), round-trip times to 2 decimals, times to the second
in UTC, and nothing at all for a missing value (pandas would print ``<NA>``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# pandas is imported inside the functions that need it: the panel imports ``duration`` while
# it is built, and pandas costs a second in a fresh kernel.

__all__ = ["RATE_REASONS", "display_frame", "duration", "number", "reason_text", "when"]

#: Columns that are identifiers, not quantities: no thousands separator.
_NOT_COUNTS = frozenset({"port", "family", "ttl"})
_DECIMALS = {"rtt_ms": 2, "rtt": 2, "cpu_percent": 1}


def when(value: Any) -> str:
    """``2026-12-04 17:22:00 UTC``; empty for a missing time."""
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        return ""
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
        return ts.strftime("%Y-%m-%d %H:%M:%S UTC")
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """``27 ms``, ``1.9 s``, ``2 min 05 s``, ``1 h 3 min``; ``?`` when unknown."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def number(value: Any, decimals: int = 0) -> str:
    """``65,535``; ``1,234.57`` with decimals; empty for a missing value."""
    import pandas as pd

    if value is None or value is pd.NA:
        return ""
    v = float(value)
    if math.isnan(v):
        return ""
    return f"{v:,.{decimals}f}"


def _cell(value: Any, kind: str, column: str) -> str:
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if kind == "time":
        return when(value)
    if kind == "int":
        return str(int(value)) if column in _NOT_COUNTS else f"{int(value):,}"
    if kind == "float":
        return number(value, _DECIMALS.get(column, 2))
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "list":
        return ", ".join("" if v is None else str(v) for v in value)
    return str(value)


def _kind(dtype: Any) -> str:
    import pandas as pd
    import pyarrow as pa

    pa_type = getattr(dtype, "pyarrow_dtype", None)
    if pa_type is not None:
        if pa.types.is_dictionary(pa_type):
            pa_type = pa_type.value_type
        if pa.types.is_timestamp(pa_type):
            return "time"
        if pa.types.is_integer(pa_type):
            return "int"
        if pa.types.is_floating(pa_type):
            return "float"
        if pa.types.is_boolean(pa_type):
            return "bool"
        if pa.types.is_list(pa_type) or pa.types.is_large_list(pa_type):
            return "list"
        return "text"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "time"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return "text"


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every cell as the text a person reads (object columns of str)."""
    import pandas as pd

    out = {}
    for column in df.columns:
        kind = _kind(df[column].dtype)
        out[column] = [_cell(v, kind, str(column)) for v in df[column].astype(object)]
    return pd.DataFrame(out, columns=list(df.columns), index=df.index, dtype=object)


#: net.ratectl's reasons, as a user reads them beside the rate.
RATE_REASONS = {
    "growing": "growing while replies keep up",
    "probing": "probing for more",
    "backoff": "backing off after loss",
    "floor": "at the template's floor",
    "ceiling": "at the template's ceiling",
    "pinned": "pinned by the rate you set",
    "unlimited": "no limit",
    "icmp-paced": "paced by ICMP errors",
    "waiting": "waiting for replies",
}


def reason_text(reason: str | None) -> str:
    return RATE_REASONS.get(reason or "", reason or "")
