"""pn.profile: the report's scenarios as real subprocesses against the lab, beside nmap."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import prtip_nb.profile as profile
from tests.conftest import need


@pytest.mark.serial
@pytest.mark.usefixtures("netns", "nmap")
def test_small_profile_is_sane() -> None:
    need(shutil.which("strace") is not None, "needs strace (apt-get install strace)")
    df = profile.run(["syn-100", "syn-1k"])
    assert set(df["tool"]) == {"prtip_nb", "nmap"}
    assert len(df) == 4
    assert (df["wall_s"] > 0).all() and (df["peak_rss_bytes"] > 1_000_000).all()
    assert df["exact"].all()
    assert (df["syscalls"] > 0).all() and (df["network_calls"] > 0).all()
    ours = df[df["tool"] == "prtip_nb"].set_index("scenario")
    assert ours.loc["syn-1k", "pps"] > ours.loc["syn-100", "pps"]
    for col in ("wall_s", "peak_rss_bytes", "futex_share"):
        assert isinstance(df[col].dtype, pd.ArrowDtype)
    figs = profile.report(df)
    assert {"memory", "runtime", "syscalls", "ratio"} <= set(figs)
    assert figs["memory"].layout.title.text


def test_strace_parser() -> None:
    from prtip_nb.profile.strace import mix, parse

    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 60.00    0.006000          60       100        99 connect
 30.00    0.003000          30       100           futex
 10.00    0.001000          10        50           brk
------ ----------- ----------- --------- --------- ----------------
100.00    0.010000                   250        99 total
"""
    calls = parse(text)
    assert calls == {"connect": 100, "futex": 100, "brk": 50}
    m = mix(calls)
    assert m["futex_share"] == 0.4 and m["network_calls"] == 100


def test_unknown_scenario_names_the_choices() -> None:
    with pytest.raises(ValueError, match="syn-100"):
        profile.run(["no-such-scenario"])


@pytest.mark.usefixtures("netns")
def test_flamegraphs_are_svg_files_listed_in_the_table(tmp_path: Path) -> None:
    from prtip_nb.profile.runner import py_spy

    need(py_spy() is not None, "needs py-spy (pip install -e '.[profile]')")
    df = profile.run(["syn-100"], nmap=False, strace=False, flamegraphs=True, output=tmp_path)
    assert list(df["tool"]) == ["prtip_nb"]
    svg = Path(df["flamegraph"].iloc[0])
    assert svg.parent.parent == tmp_path and svg.name == "syn-100-prtip_nb.svg"
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    # Python frames of the scan itself were sampled, not only the interpreter's start-up.
    assert "prtip_nb" in text
    assert (svg.parent / "results.json").exists()


@pytest.mark.serial  # a memory figure: measured alone, not beside four busy workers
@pytest.mark.usefixtures("netns")
def test_marginal_memory_is_under_100_bytes_per_port() -> None:
    """Issue 3's figure, whole process: (peak RSS at 65,535 ports - at 100) / 65,435, the
    median of three pairs (a single pair swings about +-5 B/port run to run). Issue 3 asks
    for 100; the guard is 80 so that a regression such as the 8 B/port index table or the
    names stage's second copy of the rows (15 B/port) fails here: 60-66 measured."""
    figures = []
    for _ in range(3):
        df = profile.run(["syn-100", "syn-65k"], nmap=False, strace=False)
        row = df.set_index("scenario").loc["syn-65k"]
        assert row["exact"]
        figures.append(float(row["marginal_bytes_per_port"]))
    assert sorted(figures)[1] <= 80, figures
