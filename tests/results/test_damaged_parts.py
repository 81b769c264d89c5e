"""A damaged part file costs its own rows, not the dataset: skipped with a warning that
names it, or an error naming it with ``strict=True``. Real files, damaged as a cut-short
copy or a bad disk damages them."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prtip_nb as pn

from .scans import T0, finished

A, B = "20261128T101500Z-aaaaaa", "20261128T111500Z-bbbbbb"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    finished(A).to_parquet(tmp_path)
    finished(B, T0 + timedelta(hours=1)).to_parquet(tmp_path)
    return tmp_path


def _ports_part(root: Path, sid: str) -> Path:
    (part,) = (root / f"scan_id={sid}" / "ports").glob("part-*.parquet")
    return part


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the footer is lost


def _scramble_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8  # the footer stays readable
    for i in range(4, len(data) - footer):
        data[i] = 0xA5
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _scramble_pages], ids=["truncated", "pages"])
def test_a_damaged_part_is_skipped_with_a_warning_naming_it(root: Path, damage: object) -> None:
    bad = _ports_part(root, B)
    damage(bad)  # type: ignore[operator]
    with pytest.warns(UserWarning, match=f"skipped {bad}"):
        res = pn.read_scans(root)
    assert set(res.ports["scan_id"].astype(str)) == {A}  # the other scan's rows all read
    assert len(res.ports) == 7
    with pytest.raises(pn.DatasetError, match=str(bad)):
        pn.read_scans(root, strict=True)


def test_a_scan_with_no_readable_part_is_skipped(root: Path) -> None:
    for part in (root / f"scan_id={B}").glob("*/part-*.parquet"):
        _truncate(part)
    with pytest.warns(UserWarning, match=f"scan_id={B}"):
        res = pn.read_scans(root)
    assert set(res.ports["scan_id"].astype(str)) == {A}
    with pytest.warns(UserWarning, match="skipped"):
        listing = pn.list_scans(root)
    assert list(listing["scan_id"]) == [A]


def test_cli_read_and_report_warn_in_one_line_and_succeed(root: Path, tmp_path: Path) -> None:
    bad = _ports_part(root, A)
    _truncate(bad)
    for args in (["read", str(root)],
                 ["report", str(root), "--scan-id", A, "-o", str(tmp_path / "r.html")]):
        out = subprocess.run([sys.executable, "-m", "prtip_nb.cli", *args],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"prtip-nb: warning: skipped {bad}" in out.stderr
        assert "Traceback" not in out.stderr
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    finished(A).to_parquet(root)
    finished(B, T0 + timedelta(hours=1)).to_parquet(root)
    return root


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 4000), flips=st.lists(st.tuples(st.integers(0, 4000),
                                                          st.integers(0, 255)), max_size=6))
def test_a_mutated_part_never_fails_the_read_of_the_rest(
    clean: Path, cut: int, flips: list[tuple[int, int]]
) -> None:
    import shutil
    import tempfile
    import warnings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(clean, root, dirs_exist_ok=True)
        bad = _ports_part(root, B)
        data = bytearray(bad.read_bytes())
        for at, byte in flips:
            data[at % len(data)] = byte
        bad.write_bytes(bytes(data[:cut] if cut < len(data) else data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = pn.read_scans(root)
        ids = res.ports["scan_id"].astype(str)
        assert (ids == A).sum() == 7  # the undamaged scan reads whole
        try:
            pn.read_scans(root, strict=True)
        except pn.DatasetError as exc:
            assert str(bad) in str(exc) or f"scan_id={B}" in str(exc)


