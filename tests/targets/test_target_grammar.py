"""nmap's target grammar: every accepted form with its exact ranges, every rejected form.

IPv4 literals here are 127/8, 198.51.100.0/24 or 203.0.113.0/24 (documentation ranges);
any other is marked ``# parse-only``. Nothing is sent, and no name reaches DNS (conftest).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

import pytest

from prtip_nb.errors import ConfigError, TargetSpecError
from prtip_nb.targets import TargetSet, parse_targets
from prtip_nb.targets.hosts import default_resolver

from .conftest import StubResolver

Stub = Callable[[dict[str, list[str]]], StubResolver]


def r(first: str, last: str | None = None) -> tuple[int, int, int]:
    a, b = ipaddress.ip_address(first), ipaddress.ip_address(last or first)
    return a.version, int(a), int(b)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1", [r("127.0.0.1")]),
        ("::1", [r("::1")]),
        ("2001:db8::1", [r("2001:db8::1")]),
        ("10.0.0.0/8", [r("10.0.0.0", "10.255.255.255")]),  # parse-only
        ("2001:db8::/64", [r("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff")]),
        ("198.51.100.77/24", [r("198.51.100.0", "198.51.100.255")]),  # host bits masked
        ("10.1.2.3/24", [r("10.1.2.0", "10.1.2.255")]),  # parse-only
        ("2001:db8::1234/120", [r("2001:db8::1200", "2001:db8::12ff")]),
        ("198.51.100.9/32", [r("198.51.100.9")]),
        ("0.0.0.0/0", [r("0.0.0.0", "255.255.255.255")]),  # parse-only
        ("198.51.100.1-5", [r("198.51.100.1", "198.51.100.5")]),
        ("198.51.100.-", [r("198.51.100.0", "198.51.100.255")]),
        ("198.51.100.*", [r("198.51.100.0", "198.51.100.255")]),
        ("198.51.100.250-", [r("198.51.100.250", "198.51.100.255")]),
        ("198.51.100.-5", [r("198.51.100.0", "198.51.100.5")]),
        ("203.0.113.1,3,7", [r("203.0.113.1"), r("203.0.113.3"), r("203.0.113.7")]),
        ("203.0.113.1,2,3", [r("203.0.113.1", "203.0.113.3")]),
        (
            "10.0-3.0.1-254",  # parse-only
            [r(f"10.{i}.0.1", f"10.{i}.0.254") for i in range(4)],  # parse-only
        ),
        (
            "192.168.3-5,7.1",  # parse-only
            [r(f"192.168.{i}.1") for i in (3, 4, 5, 7)],  # parse-only
        ),
        ("127.0-3.0.1-2", [r(f"127.{i}.0.1", f"127.{i}.0.2") for i in range(4)]),
        ("127.0-3.-.-", [r("127.0.0.0", "127.3.255.255")]),
        ("127.*.*.*", [r("127.0.0.0", "127.255.255.255")]),
        ("127.0.0.1-127.0.1.9", [r("127.0.0.1", "127.0.1.9")]),
        ("2001:db8::1-2001:db8::3", [r("2001:db8::1", "2001:db8::3")]),
        ("::1 127.0.0.1", [r("127.0.0.1"), r("::1")]),
        ("127.0.0.1\n\t127.0.0.9", [r("127.0.0.1"), r("127.0.0.9")]),
        ("127.0.0.1,127.0.0.2", [r("127.0.0.1", "127.0.0.2")]),
        ("198.51.100.1,203.0.113.1", [r("198.51.100.1"), r("203.0.113.1")]),
        ("198.51.100.1,,203.0.113.1,", [r("198.51.100.1"), r("203.0.113.1")]),
        ("::1,127.0.0.1", [r("127.0.0.1"), r("::1")]),
        (["127.0.0.1", "::1 198.51.100.3"], [r("127.0.0.1"), r("198.51.100.3"), r("::1")]),
        ("127.0.0.0/30 127.0.0.2-9 127.0.0.10", [r("127.0.0.0", "127.0.0.10")]),
        ("127.0.0.5 127.0.0.5", [r("127.0.0.5")]),
    ],
)
def test_accepted(spec: str | Sequence[str], expected: list[tuple[int, int, int]]) -> None:
    assert parse_targets(spec).ranges == tuple(expected)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("300.1.1.1", "out of range"),  # parse-only
        ("10.0.0.0/33", "/33"),  # parse-only
        ("::1/129", "/129"),
        ("1.2.3", "4 dot-separated octets"),  # parse-only
        ("10.0-3.1-254", "4 dot-separated octets"),  # parse-only: only three octets
        ("1.2.3.4/", "missing"),  # parse-only
        ("127.0.0.1/x", "not a number"),
        ("127.0.0.1/24/8", "not a number"),
        ("10.0.0.5-1", "reversed"),  # parse-only
        ("127.0.0.9-127.0.0.1", "reversed"),
        ("2001:db8::9-2001:db8::1", "reversed"),
        ("127.0.0.1-::1", "not a valid"),
        ("127.1", "4 dot-separated octets"),
        ("2130706433", "4 dot-separated octets"),
        ("0x7f.0.0.1", "ambiguous"),
        ("010.0.0.1", "leading zero"),  # parse-only
        ("127.0.0.0-5/24", "cannot be combined"),
        ("fe80::1%eth0", "scope"),
        ("2001:db8::g", "not a valid IPv6"),
        ("1:2:3:4:5:6:7:8:9", "not a valid IPv6"),
        ("-.-.-.1", "separate address ranges"),
        ("bad_host!", "valid hostname"),
        ("-leading-hyphen.test", "valid hostname"),
        ("a" * 64 + ".test", "valid hostname"),
        ("127.0.0.1,,,2", "not a number 0-255"),
    ],
)
def test_rejected(spec: str, reason: str) -> None:
    with pytest.raises(TargetSpecError) as err:
        parse_targets(spec, resolver=StubResolver({}))
    assert err.value.token == spec
    assert repr(spec) in str(err.value)
    assert reason in str(err.value)


@pytest.mark.parametrize("spec", ["", "   ", [], ",,,", ["", " \n"]])
def test_no_targets(spec: str | list[str]) -> None:
    with pytest.raises(TargetSpecError, match="name at least one target") as err:
        parse_targets(spec)
    assert "never scans by default" in str(err.value)


def test_non_string_target() -> None:
    with pytest.raises(TargetSpecError, match="must be strings"):
        parse_targets(["127.0.0.1", 7])  # type: ignore[list-item]


# -- families --------------------------------------------------------------------------


def test_family_4_rejects_ipv6_literals_and_suggests_minus_6() -> None:
    with pytest.raises(TargetSpecError, match="-6") as err:
        parse_targets("127.0.0.1 2001:db8::1", family=4)
    assert err.value.token == "2001:db8::1" and "'2001:db8::1'" in str(err.value)


def test_family_6_rejects_ipv4_literals() -> None:
    with pytest.raises(TargetSpecError, match="-4") as err:
        parse_targets("::1 198.51.100.1/30", family=6)
    assert "'198.51.100.1/30'" in str(err.value)


@pytest.mark.parametrize("family", [5, "4", 0])
def test_bad_family(family: object) -> None:
    with pytest.raises(ConfigError):
        parse_targets("::1", family=family)  # type: ignore[arg-type]


# -- hostnames -------------------------------------------------------------------------


def test_hostname_prefers_ipv4_and_is_kept(stub: Stub) -> None:
    res = stub({"www.example.test": ["2001:db8::5", "203.0.113.5", "203.0.113.6"]})
    ts = parse_targets("www.example.test", resolver=res)
    assert ts.ranges == (r("203.0.113.5"),)
    assert ts.hostname("203.0.113.5") == "www.example.test"
    assert ts.hostname("203.0.113.6") is None and ts.hostname("not an ip") is None
    assert res.calls == [("www.example.test", None)]


def test_hostname_falls_back_to_ipv6(stub: Stub) -> None:
    ts = parse_targets("v6only.test", resolver=stub({"v6only.test": ["2001:db8::7"]}))
    assert ts.ranges == (r("2001:db8::7"),) and ts.hostname("2001:db8:0::7") == "v6only.test"


def test_family_6_resolves_ipv6_only(stub: Stub) -> None:
    res = stub({"dual.test": ["203.0.113.5", "2001:db8::5"]})
    ts = parse_targets("dual.test", family=6, resolver=res)
    assert ts.ranges == (r("2001:db8::5"),) and res.calls == [("dual.test", 6)]
    with pytest.raises(TargetSpecError, match="IPv4 address"):
        parse_targets("v6only.test", family=4, resolver=stub({"v6only.test": ["2001:db8::7"]}))


def test_hostname_with_prefix(stub: Stub) -> None:
    ts = parse_targets("web.test/30", resolver=stub({"web.test": ["203.0.113.6"]}))
    assert ts.ranges == (r("203.0.113.4", "203.0.113.7"),)
    assert ts.hostname("203.0.113.6") == "web.test"


def test_each_name_is_resolved_once(stub: Stub) -> None:
    res = stub({"a.test": ["203.0.113.1"], "b.test": ["203.0.113.2"]})
    ts = parse_targets(
        "a.test a.test,b.test a.test/31", exclude=["b.test", "b.test/32"], resolver=res
    )
    assert ts.ranges == (r("203.0.113.0", "203.0.113.1"),)
    assert sorted(res.calls) == [("a.test", None), ("b.test", None)]


def test_localhost_with_the_default_resolver_needs_no_lookup() -> None:
    # conftest makes any real lookup fail the test: RFC 6761 names are answered locally.
    ts = parse_targets("localhost")
    assert ts.ranges == (r("127.0.0.1"),) and ts.hostname("127.0.0.1") == "localhost"
    assert parse_targets("localhost", family=6).ranges == (r("::1"),)
    assert parse_targets("LocalHost.").is_loopback
    assert default_resolver("app.localhost", None) == ["127.0.0.1", "::1"]


def test_unresolvable_name_with_the_default_resolver() -> None:
    with pytest.raises(TargetSpecError) as err:
        parse_targets("127.0.0.1 no-such-host.invalid")
    msg = str(err.value)
    assert "'no-such-host.invalid'" in msg and "could not resolve" in msg
    assert "check the name" in msg and "IP address" in msg
    assert err.value.token == "no-such-host.invalid"


def test_unresolvable_name_with_a_stub(stub: Stub) -> None:
    with pytest.raises(TargetSpecError, match="'gone.test'"):
        parse_targets("gone.test", resolver=stub({}))
    with pytest.raises(TargetSpecError, match="'empty.test'"):
        parse_targets("empty.test", resolver=stub({"empty.test": []}))
    with pytest.raises(TargetSpecError, match="not an IP address"):
        parse_targets("junk.test", resolver=stub({"junk.test": ["not-an-ip"]}))


def test_default_resolver_uses_getaddrinfo_with_the_family(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []

    def fake(host: str, port: None, family: int = 0, type: int = 0) -> list[tuple]:
        seen.append(family)
        return [
            (socket.AF_INET6, type, 6, "", ("fe80::1%eth0", 0, 0, 2)),
            (socket.AF_INET, type, 6, "", ("203.0.113.9", 0)),
            (socket.AF_INET, type, 6, "", ("203.0.113.9", 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    assert default_resolver("host.test", None) == ["fe80::1", "203.0.113.9"]
    default_resolver("host.test", 4)
    default_resolver("host.test", 6)
    assert seen == [socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6]
    assert parse_targets("host.test").ranges == (r("203.0.113.9"),)


def test_idn_names_are_encoded_before_resolving(stub: Stub) -> None:
    res = stub({"xn--bcher-kva.test": ["203.0.113.20"]})
    assert parse_targets("bücher.test", resolver=res).ranges == (r("203.0.113.20"),)


# -- TargetSet -------------------------------------------------------------------------


def test_targetset_accessors() -> None:
    ts = parse_targets("127.0.0.1-2 ::1 198.51.100.255")
    assert ts.size == len(ts) == 4 and bool(ts)
    assert list(ts) == ["127.0.0.1", "127.0.0.2", "198.51.100.255", "::1"]
    assert [ts.address(i) for i in range(4)] == list(ts)
    assert [ts.family(i) for i in range(4)] == [4, 4, 4, 6]
    assert ts.packed(2) == bytes([198, 51, 100, 255]) and ts.packed(3) == bytes(15) + b"\x01"
    assert ts.address(-1) == "::1"
    assert ts.families == {4, 6} and not ts.is_loopback
    assert "127.0.0.2" in ts and "127.0.0.3" not in ts and "::1" in ts and "x" not in ts
    for bad in (4, -5):
        with pytest.raises(IndexError):
            ts.address(bad)


def test_targetset_huge_ipv6_is_constant_size() -> None:
    ts = parse_targets("2001:db8::/64")
    assert ts.size == 2**64 and bool(ts) and len(ts.ranges) == 1
    assert ts.address(2**64 - 1) == "2001:db8::ffff:ffff:ffff:ffff"
    assert ts.packed(1) == ipaddress.ip_address("2001:db8::1").packed
    with pytest.raises(OverflowError):
        len(ts)  # a Python limit above 2**63: use .size


def test_is_loopback() -> None:
    assert parse_targets("127.0.0.0/8 ::1").is_loopback
    assert not parse_targets("127.0.0.1 ::2").is_loopback
    assert not parse_targets("126.255.255.255-127.0.0.1").is_loopback  # parse-only
    assert not TargetSet().is_loopback and not TargetSet() and TargetSet().size == 0


def test_targetset_constructor_normalises_and_checks() -> None:
    ts = TargetSet([r("::1"), r("127.0.0.5", "127.0.0.9"), r("127.0.0.1", "127.0.0.6")])
    assert ts.ranges == (r("127.0.0.1", "127.0.0.9"), r("::1"))
    assert ts == parse_targets("127.0.0.1-9 ::1") and hash(ts) == hash(TargetSet(ts.ranges))
    named = TargetSet(ts.ranges, {"127.0.0.2": "a.test", "198.51.100.1": "outside.test"})
    assert named.hostname("127.0.0.2") == "a.test" and named.hostname("198.51.100.1") is None
    with pytest.raises(ValueError):
        TargetSet([(4, 0, 2**32)])
    assert "127.0.0.1-127.0.0.9" in repr(ts)
