"""-iL input files, exclusions and exclude files: exclusions always win."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from prtip_nb.errors import TargetSpecError
from prtip_nb.targets import parse_targets

from .conftest import StubResolver

Stub = Callable[[dict[str, list[str]]], StubResolver]


def r(first: str, last: str | None = None) -> tuple[int, int, int]:
    a, b = ipaddress.ip_address(first), ipaddress.ip_address(last or first)
    return a.version, int(a), int(b)


def test_input_file_with_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(
        "# lab hosts\n"
        "\n"
        "127.0.0.1   127.0.0.3 # two on one line, then a comment\n"
        "  198.51.100.0/30\n"
        "203.0.113.1,5,9\t::1\n"
        "#127.0.0.200 commented out\n"
    )
    ts = parse_targets([], input_file=path)
    assert ts.ranges == (
        r("127.0.0.1"), r("127.0.0.3"), r("198.51.100.0", "198.51.100.3"),
        r("203.0.113.1"), r("203.0.113.5"), r("203.0.113.9"), r("::1"),
    )  # fmt: skip
    # -iL adds to targets given directly.
    both = parse_targets("127.0.0.2", input_file=str(path))
    assert both.ranges[0] == r("127.0.0.1", "127.0.0.3")


def test_input_file_names_use_the_resolver(tmp_path: Path, stub: Stub) -> None:
    path = tmp_path / "names.txt"
    path.write_text("db.test\n")
    ts = parse_targets("", input_file=path, resolver=stub({"db.test": ["203.0.113.40"]}))
    assert ts.ranges == (r("203.0.113.40"),) and ts.hostname("203.0.113.40") == "db.test"


def test_missing_input_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(TargetSpecError, match="cannot read -iL file") as err:
        parse_targets("127.0.0.1", input_file=missing)
    assert str(missing) in str(err.value) and err.value.token == str(missing)


def test_stdin_dash_is_refused() -> None:
    with pytest.raises(TargetSpecError, match="standard input"):
        parse_targets("", input_file="-")


def test_input_file_of_only_comments(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# nothing here\n\n")
    with pytest.raises(TargetSpecError, match="name at least one target") as err:
        parse_targets([], input_file=path)
    assert "is empty" in str(err.value)


def test_bad_token_in_input_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("127.0.0.1\n127.0.0.300\n")
    with pytest.raises(TargetSpecError, match="'127.0.0.300'"):
        parse_targets([], input_file=path)


def test_binary_input_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TargetSpecError, match="not UTF-8"):
        parse_targets([], input_file=path)


# -- exclusions ------------------------------------------------------------------------


def test_exclusions_win() -> None:
    ts = parse_targets("127.0.0.0/24", exclude="127.0.0.5,127.0.0.100-200 127.0.0.255")
    assert ts.ranges == (
        r("127.0.0.0", "127.0.0.4"), r("127.0.0.6", "127.0.0.99"), r("127.0.0.201", "127.0.0.254"),
    )  # fmt: skip
    assert ts.size == 256 - 1 - 101 - 1
    assert "127.0.0.5" not in ts and "127.0.0.150" not in ts


def test_exclusions_apply_per_family() -> None:
    ts = parse_targets("127.0.0.0/30 2001:db8::/126", exclude=["127.0.0.1", "2001:db8::2"])
    assert ts.ranges == (
        r("127.0.0.0"), r("127.0.0.2", "127.0.0.3"), r("2001:db8::", "2001:db8::1"),
        r("2001:db8::3"),
    )  # fmt: skip


def test_exclusion_of_a_name_removes_all_its_addresses() -> None:
    ts = parse_targets("127.0.0.0/30 ::1 ::2", exclude="localhost")
    assert ts.ranges == (r("127.0.0.0"), r("127.0.0.2", "127.0.0.3"), r("::2"))


def test_excluded_name_loses_its_hostname(stub: Stub) -> None:
    res = stub({"a.test": ["203.0.113.1"], "b.test": ["203.0.113.2"]})
    ts = parse_targets("a.test b.test", exclude="203.0.113.1", resolver=res)
    assert ts.hostname("203.0.113.1") is None and ts.hostname("203.0.113.2") == "b.test"


def test_exclusion_of_the_other_family_is_harmless() -> None:
    ts = parse_targets("127.0.0.1", exclude="::1", family=4)
    assert ts.ranges == (r("127.0.0.1"),)


def test_exclusions_that_remove_everything() -> None:
    with pytest.raises(TargetSpecError, match="removed every target") as err:
        parse_targets("127.0.0.0/30", exclude="127.0.0.0-1 127.0.0.2/31")
    assert "'127.0.0.0-1'" in str(err.value) and "'127.0.0.2/31'" in str(err.value)


def test_exclude_file(tmp_path: Path) -> None:
    path = tmp_path / "exclude.txt"
    path.write_text("# never touch the gateway\n127.0.0.1 # gw\n127.0.0.3\n")
    ts = parse_targets("127.0.0.0/30", exclude_file=path, exclude="127.0.0.0")
    assert ts.ranges == (r("127.0.0.2"),)
    with pytest.raises(TargetSpecError, match="cannot read --excludefile"):
        parse_targets("127.0.0.1", exclude_file=tmp_path / "missing.txt")


def test_bad_or_unresolvable_exclusion_is_an_error(stub: Stub) -> None:
    # An exclusion that cannot be honoured must stop the scan, not be skipped.
    with pytest.raises(TargetSpecError, match="'127.0.0.256'"):
        parse_targets("127.0.0.1", exclude="127.0.0.256")
    with pytest.raises(TargetSpecError, match="'gone.test'"):
        parse_targets("127.0.0.1", exclude="gone.test", resolver=stub({}))


def test_huge_exclusions_stay_ranges() -> None:
    ts = parse_targets("10.0.0.0/8", exclude="10.128.0.0/9 10.0.0.0/16")  # parse-only
    assert ts.ranges == (r("10.1.0.0", "10.127.255.255"),)  # parse-only


def test_input_file_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("198.51.100.1  # ok\n\n198.51.100.2 198.51.100.999\n")
    with pytest.raises(TargetSpecError, match=r"-iL file '.*t\.txt', line 3: .*198\.51\.100\.999"):
        parse_targets([], input_file=path)
    with pytest.raises(TargetSpecError, match=r"--excludefile file '.*', line 3"):
        parse_targets("198.51.100.0/24", exclude_file=path)


def test_input_file_of_zeros_fails_at_once() -> None:
    """-iL /dev/zero read until MemoryError; now the first line is too long to be one."""
    t0 = time.monotonic()
    with pytest.raises(TargetSpecError, match="line 1: line longer than 4096 bytes"):
        parse_targets([], input_file="/dev/zero")
    assert time.monotonic() - t0 < 1.0


def test_input_file_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prtip_nb.targets import hosts

    monkeypatch.setattr(hosts, "MAX_BYTES", 1000)
    path = tmp_path / "big.txt"
    path.write_text("198.51.100.1\n" * 100)
    with pytest.raises(TargetSpecError, match=r"line 77: larger than 1,000 bytes; merge addresses"):
        parse_targets([], input_file=path)
