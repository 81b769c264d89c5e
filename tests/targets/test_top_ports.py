"""The shipped top-ports rankings, and reading nmap's at run time."""

from __future__ import annotations

from pathlib import Path

import pytest

import prtip_nb
from prtip_nb.errors import PortSpecError
from prtip_nb.targets import PortSet, top_ports, toplist
from prtip_nb.targets.toplist import port_ranking

DATA = Path(prtip_nb.__file__).parent / "data"


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_shipped_ranking_is_well_formed(proto: str) -> None:
    text = (DATA / f"top_ports_{proto}.txt").read_text("utf-8")
    assert text.startswith("#") and "NOT derived from nmap" in text and "IANA" in text
    ranking = port_ranking(proto)
    assert len(ranking) >= 1000
    assert len(set(ranking)) == len(ranking)
    assert all(1 <= p <= 65535 for p in ranking)
    # After the hand-ranked head, the tail is ascending: the rest of 1-1024, then registered.
    tail = ranking[-300:]
    assert list(tail) == sorted(tail)
    assert set(range(1, 1025)) <= set(ranking)


def test_hand_ranked_heads() -> None:
    assert port_ranking("tcp")[:3] == (80, 443, 22)
    assert port_ranking("udp")[:2] == (53, 123)


def test_top_ports_returns_the_head_as_a_portset() -> None:
    ps = top_ports(5)
    assert ps == PortSet(tcp=((22, 22), (80, 80), (443, 443), (21, 21), (25, 25)))
    assert top_ports(3, "udp").protos == ("udp",)
    assert len(top_ports(len(port_ranking("tcp")))) == len(port_ranking("tcp"))


@pytest.mark.parametrize(("n", "proto"), [(0, "tcp"), (-3, "udp"), (10**5, "tcp")])
def test_top_ports_range_is_checked(n: int, proto: str) -> None:
    with pytest.raises(PortSpecError, match=f"top_ports={n}"):
        top_ports(n, proto)


def test_unknown_source() -> None:
    with pytest.raises(PortSpecError, match="'nmapx'"):
        top_ports(10, source="nmapx")


def test_nmap_source_reads_the_installed_file_at_run_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_rankings: None
) -> None:
    # A made-up services file in nmap's format (name, port/proto, open-frequency, comment).
    (tmp_path / "nmap-services").write_text(
        "# fake\n"
        "alpha\t7/tcp\t0.10\t# seven\n"
        "beta\t9/tcp\t0.90\n"
        "gamma\t9/udp\t0.95\n"
        "delta\t8/tcp\t0.10\n"
        "broken line\n"
        "eps\t12/tcp\tnotanumber\n"
    )
    monkeypatch.setenv("NMAPDIR", str(tmp_path))
    assert port_ranking("tcp", source="nmap") == (9, 7, 8)  # by frequency, ties by port
    assert top_ports(2, source="nmap") == PortSet(tcp=((7, 7), (9, 9)))
    assert top_ports(1, "udp", source="nmap") == PortSet(udp=((9, 9),))
    with pytest.raises(PortSpecError, match="has 3 ports"):
        top_ports(4, source="nmap")


def test_nmap_source_without_nmap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_rankings: None
) -> None:
    monkeypatch.delenv("NMAPDIR", raising=False)
    monkeypatch.setattr(toplist, "_NMAP_DIRS", (str(tmp_path / "absent"),))
    with pytest.raises(PortSpecError, match="nmap is not installed"):
        top_ports(10, source="nmap")


def test_nmap_source_with_the_real_file(fresh_rankings: None) -> None:
    if toplist.nmap_services_path() is None:
        pytest.skip("nmap's data files are not installed")
    ps = top_ports(100, source="nmap")
    assert len(ps) == 100 and ("tcp", 80) in ps
