"""Mutated checkpoints: ``resume.load`` accepts a checkpoint or refuses it with a
DatasetError, never another exception, and what it accepts names no path outside the
scan folder. The checkpoint is the one ``Checkpointer.write`` produces for a real config
and index space; hypothesis replaces any field with any JSON, or cuts and flips bytes."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prtip_nb._fileio import unsafe_name
from prtip_nb.config import ScanConfig
from prtip_nb.engine.checkpoint import FORMAT
from prtip_nb.engine.resume import config_from_json, load, space_digest
from prtip_nb.engine.scan import build_space
from prtip_nb.errors import DatasetError, SpecError

SID = "20261204T120000Z-abcdef"


def _real_doc() -> dict[str, Any]:
    cfg = ScanConfig(targets=("198.51.100.0/30",), ports="1-1000", seed=7,  # parse-only
                     output="/data/scans")
    return {
        "format": FORMAT, "scan_id": SID, "started": "2026-12-04T12:00:00+00:00",
        "config": cfg.to_json(), "seed": 7, "distributed": False,
        "space": space_digest(build_space(cfg)[2]), "status": "running",
        "updated": "2026-12-04T12:00:01+00:00",
        "engine_state": {"syn_secret": "00" * 16, "syn_sport": 40000},
        "shards": {"1/1": {"low_water": 1200, "total": 4000, "status": "running", "tag": "",
                           "engine_state": {"syn_secret": "00" * 16, "syn_sport": 40000}}},
        "parts": ["part-00000.parquet", "part-00001.parquet"],
    }  # fmt: skip


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["../x", "/etc", "..", "s003-", "a/b", "\x00", "1/1", "0/0"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    return out


def _set(doc: dict[str, Any], path: tuple[Any, ...], key: str | None, value: Any) -> None:
    node: Any = doc
    for k in path[:-1]:
        node = node[k]
    if not path:
        node[key or "extra_key"] = value
    elif key is not None and isinstance(node[path[-1]], dict):
        node[path[-1]][key] = value  # add a key (perhaps unknown) inside that object
    else:
        node[path[-1]] = value


def _check_loads_or_refuses(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / f"scan_id={SID}"
        folder.mkdir()
        (folder / "_checkpoint.json").write_bytes(data)
        try:
            ck = load(folder)
        except DatasetError:
            return
        assert ck.scan_id == SID
        for entry in ck.shards.values():
            tag = entry.get("tag", "")
            assert tag == "" or unsafe_name(tag) is None
        try:
            config_from_json(ck.config)
        except (DatasetError, SpecError):
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=json_values, key=st.none() | st.text(max_size=8))
def test_a_field_replaced_by_any_json(data: st.DataObject, value: Any, key: str | None) -> None:
    doc = _real_doc()
    path = data.draw(st.sampled_from(_paths(doc)))
    _set(doc, path, key, value)
    _check_loads_or_refuses(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 2000), flips=st.lists(st.tuples(st.integers(0, 2000),
                                                          st.integers(0, 255)), max_size=4))
def test_cut_and_flipped_bytes(cut: int, flips: list[tuple[int, int]]) -> None:
    raw = bytearray(json.dumps(_real_doc(), indent=1).encode())
    for at, byte in flips:
        raw[at % len(raw)] = byte
    _check_loads_or_refuses(bytes(raw[: max(cut, 1)] if cut < len(raw) else raw))
