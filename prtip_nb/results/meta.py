"""ScanMeta: what a scan was (id, config, times, version), and its Parquet footer form.

Every part file carries these keys, so any one footer tells which scan it belongs to and how
it was run, without reading a row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from prtip_nb._scanid import new_scan_id
from prtip_nb._version import __version__
from prtip_nb.config import upgrade_json
from prtip_nb.errors import DatasetError
from prtip_nb.results import schema

__all__ = ["ScanMeta", "new_scan_id", "parse_time"]


def parse_time(value: datetime | str, *, what: str = "time") -> datetime:
    """A tz-aware UTC datetime from a datetime or ISO 8601 text; naive values are taken as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{what} {value!r} is not ISO 8601, e.g. 2026-11-28T10:15:00Z"
            ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True)
class ScanMeta:
    """The identity of one scan. ``config`` is the ScanConfig as JSON-able data."""

    scan_id: str
    config: dict[str, Any] = field(hash=False)
    started: datetime
    ended: datetime | None = None
    tool_version: str = __version__
    #: The results schema version the scan was written with (older ones are upgraded on read).
    schema_version: int = field(default=schema.SCHEMA_VERSION, compare=False)

    def __post_init__(self) -> None:
        # Naive datetimes are ambiguous once written to a file read elsewhere: refuse them.
        for name in ("started", "ended"):
            value = getattr(self, name)
            if value is None:
                continue
            if value.tzinfo is None:
                raise ValueError(f"ScanMeta.{name} must be tz-aware (UTC), got {value!r}")
            object.__setattr__(self, name, value.astimezone(UTC))
        if not self.scan_id or "/" in self.scan_id or "=" in self.scan_id:
            raise ValueError(f"scan_id {self.scan_id!r} cannot name a directory scan_id=<id>")

    def with_ended(self, ended: datetime | None) -> ScanMeta:
        return replace(self, ended=ended)

    def parquet_metadata(self) -> dict[bytes, bytes]:
        """The ``schema.META_*`` key/value pairs that every part file of this scan carries."""
        ended = self.ended.isoformat() if self.ended is not None else ""
        config = json.dumps(self.config, sort_keys=True, default=str)
        return {
            schema.META_SCHEMA_VERSION: str(schema.SCHEMA_VERSION).encode(),
            schema.META_TOOL_VERSION: self.tool_version.encode(),
            schema.META_SCAN_ID: self.scan_id.encode(),
            schema.META_CONFIG: config.encode(),
            schema.META_STARTED: self.started.isoformat().encode(),
            schema.META_ENDED: ended.encode(),
        }

    @classmethod
    def from_parquet_metadata(cls, md: Mapping[bytes, bytes] | None, *, path: str) -> ScanMeta:
        """Parse a footer written by :meth:`parquet_metadata`; ``path`` names it in errors."""
        md = md or {}
        if schema.META_SCAN_ID not in md or schema.META_STARTED not in md:
            raise DatasetError(f"{path} was not written by prtip_nb (no prtip_nb.* metadata)")
        version = int(md.get(schema.META_SCHEMA_VERSION, b"1"))
        if version > schema.SCHEMA_VERSION:
            raise DatasetError(
                f"{path} has results schema {version}; this prtip_nb reads up to "
                f"{schema.SCHEMA_VERSION}: upgrade prtip_nb"
            )
        ended = md.get(schema.META_ENDED, b"").decode()
        config = json.loads(md.get(schema.META_CONFIG, b"{}"))
        if isinstance(config, dict):  # an older footer's ``extra`` becomes today's fields
            config = upgrade_json(config)
        return cls(
            scan_id=md[schema.META_SCAN_ID].decode(),
            config=config,
            started=datetime.fromisoformat(md[schema.META_STARTED].decode()),
            ended=datetime.fromisoformat(ended) if ended else None,
            tool_version=md.get(schema.META_TOOL_VERSION, b"").decode(),
            schema_version=version,
        )
