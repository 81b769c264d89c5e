"""Mutated real files: every reader either reads them or raises FileFormatError naming the
file, never another exception (issue 16). A fixed budget of examples, derandomized, so that
``make test`` takes the same few seconds every time."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prtip_nb as pn
from prtip_nb.interop.commands import load_file

from .conftest import DATA

SEEDS = [DATA / "nmap" / n for n in ("scripts.xml", "os-trace.xml", "odd-scripts-everywhere.xml",
                                     "sweep.xml")] + [  # fmt: skip
    DATA / n for n in ("masscan-1.3.json", "masscan.ndjson", "masscan.list", "masscan.xml")
]
# Bytes a mutation writes: markup and JSON punctuation, digits, quotes, huge numbers.
PIECES = [b"<", b">", b"/", b'"', b"=", b"&", b"&amp;", b"{", b"}", b"[", b"]", b",", b":",
          b"9" * 30, b"-1", b"\x00", b"\xff", b" ", b"\n", b"<port>", b"</host>", b"<script>",
          b"<table>", b'portid="', b"ttl", b"1e999"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Path, bytes]:
    seed = draw(st.sampled_from(SEEDS))
    data = bytearray(seed.read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(PIECES))
        if kind == "insert":
            data[at:at] = piece
        elif kind == "delete":
            data[at : at + draw(st.integers(1, 40))] = b""
        else:
            data[at : at + len(piece)] = piece
    return seed, bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(case=mutated())
def test_mutated_files_read_or_fail_clearly(case: tuple[Path, bytes], tmp_path: Path) -> None:
    seed, data = case
    path = tmp_path / seed.name
    path.write_bytes(data)
    try:
        res = load_file(path)
    except pn.FileFormatError as exc:
        assert str(path) in str(exc)
        return
    res.tables["ports"].validate(full=True)
    if res.meta is not None:  # and what was read writes out again
        res.to_nmap_xml(tmp_path / "out.xml")


@pytest.mark.parametrize("seed", SEEDS, ids=[s.name for s in SEEDS])
def test_seeds_read(seed: Path) -> None:
    assert load_file(seed).tables["ports"].num_rows > 0 or "sweep" in seed.name


def test_what_the_fuzzer_found(tmp_path: Path) -> None:
    """Each case once made a reader raise something other than FileFormatError."""
    scripts = (DATA / "nmap" / "scripts.xml").read_text()
    bad_encoding = tmp_path / "enc.xml"
    bad_encoding.write_text(scripts.replace('encoding="UTF-8"', 'encoding="ttlUTF-8"'))
    with pytest.raises(pn.FileFormatError, match="encoding"):
        pn.read_nmap_xml(bad_encoding)
    conf = tmp_path / "conf.xml"  # an attribute the schema types: conf is 0-10, not ">10"
    conf.write_text(scripts.replace('conf="10"', 'conf="&gt;10"'))
    assert pn.read_nmap_xml(conf).tables["ports"]["conf"].to_pylist() == [3, 3, 3, 3, None]
    endtime = tmp_path / "masscan.xml"  # 40 digits of epoch seconds: no time, not a crash
    endtime.write_text((DATA / "masscan.xml").read_text().replace(
        'endtime="1764325200"', 'endtime="9999999999999999999999999999991764325200"'))
    assert pn.read_masscan(endtime).tables["ports"].num_rows == 5
