"""Checking a checkpoint file before resume trusts any of it.

A checkpoint is read back as root and decides where a resumed scan writes (its scan id and
part tag become paths) and what it sends (its config). Whoever could edit the file would
otherwise steer both: a ``tag`` of ``"../../x"`` once made ``resume`` write outside the
scan folder. So ``check_doc`` accepts only what ``Checkpointer.write`` and the Dask
manifest (``_dmerge.write_manifest``) produce: known keys, each of the right type, names
that stay one path component, and the scan id of the folder the file lies in. Anything
else is a ``DatasetError`` naming the file and the field: resume refuses, it never guesses.

``engine_state`` is the one open mapping (engines add keys as they learn to resume): its
keys must be plain names and its values JSON scalars; the keys known today are typed.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from .._fileio import unsafe_name
from ..errors import DatasetError

__all__ = ["check_doc"]

TOP = {"format", "scan_id", "started", "updated", "config", "seed", "distributed", "space",
       "status", "engine_state", "shards", "parts"}  # fmt: skip
SHARD = {"low_water", "total", "status", "tag", "engine_state", "index"}
STATUSES = {"pending", "running", "completed", "cancelled", "failed"}
_TAG = re.compile(r"[A-Za-z0-9_]+-?")  # "s003-": what distributed.py writes
_SHARD_KEY = re.compile(r"([0-9]{1,9})/([0-9]{1,9})")
_PART = re.compile(r"part-[A-Za-z0-9_-]*[0-9]+\.parquet")
_STATE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_HEX = re.compile(r"(?:[0-9a-f]{2}){1,64}")
_STATE_TYPES: dict[str, str] = {"syn_secret": "hex", "udp_secret": "hex", "syn_sport": "port",
                                "udp_sport": "port"}  # fmt: skip


class _Bad(Exception):
    pass


def _int(value: Any, what: str, lo: int = 0, hi: int = 1 << 64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _Bad(f"{what} must be an integer in {lo}..{hi}, not {value!r}")
    return value


def _str(value: Any, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _Bad(f"{what} must be text of at most {limit} characters, not {value!r:.80}")
    return value


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be an object, not {type(value).__name__}")
    return value


def _status(value: Any, what: str) -> None:
    if not isinstance(value, str) or value not in STATUSES:
        raise _Bad(f"{what} {value!r:.40} is not one of {sorted(STATUSES)}")


def _keys(doc: dict[str, Any], known: set[str], what: str) -> None:
    unknown = sorted(set(doc) - known)
    if unknown:
        raise _Bad(f"{what} has unknown field(s) {', '.join(map(repr, unknown))}")


def _engine_state(value: Any, what: str) -> None:
    for key, v in _dict(value, what).items():
        if not _STATE_KEY.fullmatch(key):
            raise _Bad(f"{what} has a bad key {key!r:.80}")
        kind = _STATE_TYPES.get(key)
        if kind == "hex" and not (isinstance(v, str) and _HEX.fullmatch(v)):
            raise _Bad(f"{what}.{key} must be hex text")
        elif kind == "port" and v is not None:
            _int(v, f"{what}.{key}", 1, 65535)
        elif v is not None and not isinstance(v, str | int | float | bool):
            raise _Bad(f"{what}.{key} must be a number or text")


def _shard(key: str, entry: Any, what: str) -> None:
    m = _SHARD_KEY.fullmatch(key)
    if m is None or not 1 <= int(m[1]) <= int(m[2]):
        raise _Bad(f"shard key {key!r:.80} is not k/n with 1 <= k <= n")
    entry = _dict(entry, what)
    _keys(entry, SHARD, what)
    if "tag" in entry:
        tag = _str(entry["tag"], f"{what}.tag", 32)
        if tag and (unsafe_name(tag) is not None or not _TAG.fullmatch(tag)):
            raise _Bad(f"{what}.tag {tag!r} is not a part tag such as 's003-' "
                       "(letters, digits, '_', one trailing '-'; no path)")
    total = _int(entry.get("total", 0), f"{what}.total")
    low = _int(entry.get("low_water", 0), f"{what}.low_water")
    if "total" in entry and low > total:
        raise _Bad(f"{what}.low_water {low} is past its total {total}")
    if "status" in entry:
        _status(entry["status"], f"{what}.status")
    if "index" in entry:
        _int(entry["index"], f"{what}.index", 0, 1 << 20)
    if "engine_state" in entry:
        _engine_state(entry["engine_state"], f"{what}.engine_state")


def _check(doc: Any, scan_id: str) -> None:
    doc = _dict(doc, "the document")
    _keys(doc, TOP, "the document")
    sid = _str(doc.get("scan_id"), "scan_id")
    if unsafe_name(sid) is not None:
        raise _Bad(f"scan_id {sid!r} {unsafe_name(sid)}")
    if sid != scan_id:
        raise _Bad(f"scan_id {sid!r} is not the scan of this folder ({scan_id!r})")
    try:
        datetime.fromisoformat(_str(doc.get("started"), "started", 64))
    except ValueError:
        raise _Bad(f"started {doc.get('started')!r:.80} is not an ISO 8601 time") from None
    _dict(doc.get("config"), "config")
    if doc.get("seed") is not None:
        _int(doc["seed"], "seed")
    if not isinstance(doc.get("distributed", False), bool):
        raise _Bad("distributed must be true or false")
    if "status" in doc:
        _status(doc["status"], "status")
    if "engine_state" in doc:
        _engine_state(doc["engine_state"], "engine_state")
    space = _dict(doc.get("space", {}), "space")
    _keys(space, {"size", "digest"}, "space")
    for key, entry in _dict(doc.get("shards", {}), "shards").items():
        _shard(key, entry, f"shards[{key!r:.40}]")
    parts = doc.get("parts", [])
    if not isinstance(parts, list) or not all(
        isinstance(p, str) and _PART.fullmatch(p) for p in parts
    ):
        raise _Bad("parts must be a list of part file names (part-NNNNN.parquet)")


def check_doc(doc: Any, path: Path, scan_id: str) -> dict[str, Any]:
    """``doc`` (parsed from checkpoint ``path`` of scan ``scan_id``) if it is one we wrote."""
    try:
        _check(doc, scan_id)
    except _Bad as exc:
        raise DatasetError(
            f"{path}: {exc}. This is not a checkpoint prtip_nb wrote; resume refuses it "
            "(start a new scan, or restore the file)"
        ) from None
    return doc
