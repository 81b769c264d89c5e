"""nmap's -p grammar: every accepted form with its exact result, every rejected form."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prtip_nb.errors import PortSpecError
from prtip_nb.targets import PortSet, parse_ports, top_ports
from prtip_nb.targets.toplist import port_ranking

R = tuple[tuple[int, int], ...]


@pytest.mark.parametrize(
    ("spec", "tcp", "udp"),
    [
        ("22", ((22, 22),), ()),
        ("0", ((0, 0),), ()),
        ("0-10", ((0, 10),), ()),
        ("-", ((1, 65535),), ()),
        ("1-65535", ((1, 65535),), ()),
        ("0-65535", ((0, 65535),), ()),
        ("-1024", ((1, 1024),), ()),
        ("60000-", ((60000, 65535),), ()),
        ("-5", ((1, 5),), ()),  # nmap: an open range, not a negative number
        ("22,80-85", ((22, 22), (80, 85)), ()),
        (" 22 , 80 ,443 ", ((22, 22), (80, 80), (443, 443)), ()),
        ("80,22,80,81,23", ((22, 23), (80, 81)), ()),
        ("1-10,5-20", ((1, 20),), ()),
        ("U:53,111,T:21-25,80", ((21, 25), (80, 80)), ((53, 53), (111, 111))),
        ("u:53,t:22", ((22, 22),), ((53, 53),)),
        ("22,U:53", ((22, 22),), ((53, 53),)),
        ("T:22,U:53,T:80", ((22, 22), (80, 80)), ((53, 53),)),
        ("T: 22 ,U: 53", ((22, 22),), ((53, 53),)),
        ("U:-", (), ((1, 65535),)),
        ("080", ((80, 80),), ()),
    ],
)
def test_accepted_text(spec: str, tcp: R, udp: R) -> None:
    ps = parse_ports(spec)
    assert (ps.tcp, ps.udp) == (tcp, udp)


@pytest.mark.parametrize(
    ("spec", "tcp"),
    [(443, ((443, 443),)), ([443, 22, 23], ((22, 23), (443, 443))), (range(1, 11), ((1, 10),))],
)
def test_accepted_ints(spec: int | Iterable[int], tcp: R) -> None:
    assert parse_ports(spec) == PortSet(tcp=tcp)


def test_default_proto_applies_to_unprefixed_items() -> None:
    assert parse_ports("53,T:22", default_proto="udp") == PortSet(tcp=((22, 22),), udp=((53, 53),))
    assert parse_ports([53, 161], default_proto="UDP") == PortSet(udp=((53, 53), (161, 161)))


def test_default_is_top_1000_tcp() -> None:
    ps = parse_ports()
    assert len(ps) == ps.count("tcp") == 1000
    assert ps == top_ports(1000)
    assert {("tcp", 22), ("tcp", 80), ("tcp", 443)} <= set(ps)
    assert ("tcp", 0) not in ps  # port 0 only when named


def test_top_ports_arg_takes_the_ranking_head() -> None:
    ps = parse_ports(top_ports=10, default_proto="udp")
    assert ps.protos == ("udp",)
    assert sorted(p for _, p in ps) == sorted(port_ranking("udp")[:10])


@pytest.mark.parametrize(
    ("spec", "token"),
    [
        ("80abc", "80abc"),
        ("22,80abc", "80abc"),
        ("0x50", "0x50"),
        ("65536", "65536"),
        ("99999999999", "99999999999"),
        ("1-0", "1-0"),
        ("-0", "-0"),
        ("", ""),
        ("   ", "   "),
        ("-p ''", "-p ''"),
        ("''", "''"),
        ("abc", "abc"),
        ("http", "http"),
        ("1--2", "1--2"),
        ("--5", "--5"),
        (",", ""),
        ("22,,80", ""),
        ("T:", "T:"),
        ("U:53,T:", "T:"),
        ("X:22", "X:22"),
        ("S:22", "S:22"),
        ("22 80", "22 80"),
        ("٣", "٣"),  # an Arabic-Indic digit: str.isdigit() is true, but it is no port
        ("1-2-3", "1-2-3"),
    ],
)
def test_rejected_text(spec: str, token: str) -> None:
    with pytest.raises(PortSpecError) as err:
        parse_ports(spec)
    assert err.value.token == token
    assert repr(token) in str(err.value)
    assert "valid form" in str(err.value)


def test_message_matches_the_documented_example() -> None:
    with pytest.raises(PortSpecError, match="expected a number 0-65535") as err:
        parse_ports("22,80abc")
    assert str(err.value).startswith(
        "bad port '80abc' in '22,80abc': expected a number 0-65535, a range like 1-1024, "
        "or '-' for all ports"
    )


@pytest.mark.parametrize("spec", [-1, 65536, [22, -5], [], [True], ["22"], 1.5, True])
def test_rejected_ints(spec: object) -> None:
    with pytest.raises(PortSpecError):
        parse_ports(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, -1, 1314, 10**6, True])
def test_rejected_top_ports(n: int) -> None:
    with pytest.raises(PortSpecError) as err:
        parse_ports(top_ports=n)
    assert str(n) in str(err.value)


def test_spec_and_top_ports_together() -> None:
    with pytest.raises(PortSpecError, match="pick one"):
        parse_ports("22", top_ports=10)


def test_unknown_default_proto() -> None:
    with pytest.raises(PortSpecError, match="'sctp'"):
        parse_ports("22", default_proto="sctp")


# -- PortSet ---------------------------------------------------------------------------


def test_portset_index_order_is_tcp_then_udp() -> None:
    ps = parse_ports("U:53,111,T:21-23,80")
    assert len(ps) == 6
    assert [ps[i] for i in range(6)] == list(ps) == [
        ("tcp", 21), ("tcp", 22), ("tcp", 23), ("tcp", 80), ("udp", 53), ("udp", 111),
    ]  # fmt: skip
    assert ps[-1] == ("udp", 111)
    assert (ps.count("tcp"), ps.count("udp"), ps.protos) == (4, 2, ("tcp", "udp"))
    with pytest.raises(IndexError):
        ps[6]
    with pytest.raises(IndexError):
        ps[-7]


def test_portset_all_ports_is_one_range() -> None:
    ps = parse_ports("T:-,U:-")
    assert len(ps) == 2 * 65535 and ps.tcp == ps.udp == ((1, 65535),)
    assert ps[65534] == ("tcp", 65535) and ps[65535] == ("udp", 1)


def test_portset_to_spec_is_canonical_and_round_trips() -> None:
    ps = parse_ports("u:53 , T:85,80-84,22")
    assert ps.to_spec() == "T:22,80-85,U:53"
    assert parse_ports(ps.to_spec(), default_proto="udp") == ps
    assert PortSet().to_spec() == "" and len(PortSet()) == 0 and PortSet().protos == ()


def test_portset_constructor_normalises_and_is_frozen() -> None:
    ps = PortSet(tcp=((80, 80), (22, 23), (24, 30)))
    assert ps.tcp == ((22, 30), (80, 80))
    assert ps == PortSet(tcp=((22, 30), (80, 80))) and hash(ps) == hash(PortSet(tcp=ps.tcp))
    assert ("tcp", 25) in ps and ("tcp", 31) not in ps and ("udp", 25) not in ps
    with pytest.raises(dataclasses.FrozenInstanceError):
        ps.tcp = ()  # type: ignore[misc]
    with pytest.raises(PortSpecError):
        PortSet(tcp=((5, 1),))
    with pytest.raises(PortSpecError):
        PortSet(udp=((1, 70000),))


ranges = st.lists(
    st.tuples(st.integers(0, 65535), st.integers(0, 300)).map(lambda t: (t[0], min(65535, sum(t)))),
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(tcp=ranges, udp=ranges)
def test_portset_matches_a_materialised_list(
    tcp: list[tuple[int, int]], udp: list[tuple[int, int]]
) -> None:
    ps = PortSet(tcp=tuple(tcp), udp=tuple(udp))
    expect = [("tcp", p) for p in sorted({p for a, b in tcp for p in range(a, b + 1)})]
    expect += [("udp", p) for p in sorted({p for a, b in udp for p in range(a, b + 1)})]
    assert len(ps) == len(expect)
    assert list(ps) == expect
    for i in {0, len(expect) // 2, len(expect) - 1} if expect else set():
        assert ps[i] == expect[i]
    if expect:
        assert parse_ports(ps.to_spec()) == ps


def test_a_portset_passes_through() -> None:
    ps = parse_ports("T:22,U:53")
    assert parse_ports(ps) is ps
