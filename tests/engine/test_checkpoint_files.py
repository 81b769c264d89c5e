"""Checkpoint and dataset files as a careful tool writes them: modes, temp files, and a
crafted checkpoint that must not steer ``resume`` outside the scan folder.

Real scans (in the suite's private namespace), real files; resume refusals are checked on
the real checkpoint a cancelled scan left, edited as an attacker would.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import prtip_nb as pn
from tests.conftest import tcp_listeners

OPEN = [22, 80, 443]


@pytest.fixture
def listening(netns: None) -> Iterator[list[int]]:
    with tcp_listeners(OPEN) as ports:
        yield ports


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def cancelled(listening: list[int], tmp_path: Path) -> tuple[Path, str]:
    """A scan cut short by cancel(): its folder holds parts and a resumable checkpoint."""
    root = tmp_path / "scans"
    s = pn.Scan("127.0.0.1", ports="1-20000", output=str(root), rate=20_000).start()
    while s.progress.done < 2000:
        assert s.running
        time.sleep(0.01)
    s.cancel()
    s.wait()
    assert s.scan_id is not None
    return root, s.scan_id


def test_checkpoint_is_0600_and_parts_follow_the_umask(cancelled: tuple[Path, str]) -> None:
    root, sid = cancelled
    folder = root / f"scan_id={sid}"
    ck = folder / "_checkpoint.json"
    assert stat.S_IMODE(ck.stat().st_mode) == 0o600  # it holds the cookie secret
    assert json.loads(ck.read_text())["seed"] is not None  # why it is private
    umask = os.umask(0o022)
    os.umask(umask)
    parts = list(folder.glob("*/part-*.parquet"))
    assert parts
    for part in parts:
        assert stat.S_IMODE(part.stat().st_mode) == 0o666 & ~umask
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]  # no debris


def _edit(root: Path, sid: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = root / f"scan_id={sid}" / "_checkpoint.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _shard(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["shards"]["1/1"]


CRAFTED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "tag with ..": (lambda d: _shard(d).update(tag="../../../escape-"), "tag"),
    "tag with /": (lambda d: _shard(d).update(tag="/tmp/escape-"), "tag"),
    "scan_id with ..": (lambda d: d.update(scan_id="../escape"), "scan_id"),
    "another scan's id": (lambda d: d.update(scan_id="20260101T000000Z-000000"), "scan_id"),
    "unknown top-level key": (lambda d: d.update(hook="x"), "hook"),
    "unknown shard key": (lambda d: _shard(d).update(path="/etc"), "path"),
    "shard key not k/n": (lambda d: d.update(shards={"1/0": _shard(d)}), "k/n"),
    "low_water past total": (lambda d: _shard(d).update(low_water=10**9), "low_water"),
    "low_water not a number": (lambda d: _shard(d).update(low_water="7"), "low_water"),
    "secret not hex": (lambda d: d["engine_state"].update(syn_secret="zz"), "syn_secret"),
    "config option unknown": (lambda d: d["config"].update(run="rm -rf /"), "run"),
    "config value bad": (lambda d: d["config"].update(rate="fast"), "config"),
    "part name with a path": (lambda d: d.update(parts=["../../x.parquet"]), "parts"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_checkpoint_is_refused_and_nothing_is_written(
    cancelled: tuple[Path, str], case: str
) -> None:
    root, sid = cancelled
    change, field = CRAFTED[case]
    if case == "secret not hex":
        _edit(root, sid, lambda d: d.setdefault("engine_state", {}))
    _edit(root, sid, change)
    outside = root.parent
    before = _files(outside)
    with pytest.raises(pn.DatasetError) as info:
        pn.resume(root, sid)
    assert field in str(info.value)
    assert _files(outside) == before  # not a byte written, inside or outside the folder


def test_a_truncated_checkpoint_names_the_file(cancelled: tuple[Path, str]) -> None:
    root, sid = cancelled
    path = root / f"scan_id={sid}" / "_checkpoint.json"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(pn.DatasetError, match=r"_checkpoint\.json.*cut short or damaged"):
        pn.resume(root, sid)


def test_the_real_checkpoint_still_resumes(cancelled: tuple[Path, str]) -> None:
    root, sid = cancelled
    res = pn.resume(root, sid)
    assert len(res.ports) == 20_000
    assert sorted(res.open_ports["port"].astype(int)) == OPEN


def test_planted_links_at_the_old_temp_names_are_not_followed(
    listening: list[int], tmp_path: Path
) -> None:
    """The old writer opened ``.<name>.tmp`` by name: a symlink planted there made root
    overwrite whatever it pointed to. Now the temp name is random and made with O_EXCL."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    xml = out / "scan.xml"
    for name in (".scan.xml.tmp", ".report.html.tmp"):
        (out / name).symlink_to(victim)
    res = pn.scan("127.0.0.1", ports="20-25", output=str(out / "scans"))
    folder = out / "scans" / f"scan_id={res.scan_id}"
    res.to_nmap_xml(xml)
    assert victim.read_text() == "precious\n"
    assert xml.read_text().startswith("<?xml")
    assert (folder / "_checkpoint.json").is_file()
    assert not (folder / "_checkpoint.json").is_symlink()


def test_a_link_at_the_final_name_is_replaced_not_followed(tmp_path: Path) -> None:
    from prtip_nb._fileio import atomic_file

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "out.txt"
    target.symlink_to(victim)
    with atomic_file(target, "w") as fh:
        fh.write("new\n")
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and target.read_text() == "new\n"


def test_a_failed_write_leaves_neither_file_nor_temp(tmp_path: Path) -> None:
    from prtip_nb._fileio import atomic_file

    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_file(target, "w", private=True) as fh:
        fh.write("half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_resume_clears_temp_files_a_killed_writer_left(cancelled: tuple[Path, str]) -> None:
    root, sid = cancelled
    folder = root / f"scan_id={sid}"
    half = folder / "ports" / ".part-00007.parquet.k3j9x2.tmp"
    half.write_bytes(b"PAR1 half a part")  # what kill -9 during a write leaves
    victim = root.parent / "victim"
    victim.write_text("precious\n")
    link = folder / "._checkpoint.json.zz.tmp"
    link.symlink_to(victim)
    res = pn.resume(root, sid)
    assert len(res.ports) == 20_000
    assert not half.exists() and not link.is_symlink()
    assert victim.read_text() == "precious\n"  # the link was removed, not followed


def test_an_output_folder_that_cannot_be_written_fails_before_the_scan(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    s = pn.Scan("198.51.100.1", ports="80", output=str(blocker / "scans"))  # parse-only
    with pytest.raises(pn.ConfigError, match="not a folder"):
        s.start()
    assert s.status == "created" and not s.running  # nothing started, nothing sent


def test_a_damaged_part_stops_resume_naming_it(cancelled: tuple[Path, str]) -> None:
    """Its rows lie below the checkpoint's mark: resume would never probe them again, so it
    refuses rather than lose them silently."""
    root, sid = cancelled
    bad = sorted((root / f"scan_id={sid}" / "ports").glob("part-*.parquet"))[0]
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(pn.DatasetError, match=str(bad)) as info:
        pn.resume(root, sid)
    assert "restore it" in str(info.value)
