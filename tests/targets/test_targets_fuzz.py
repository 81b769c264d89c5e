"""Arbitrary text never raises anything but the spec errors, and never reaches DNS."""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from prtip_nb.errors import PortSpecError, TargetSpecError
from prtip_nb.targets import PortSet, TargetSet, parse_ports, parse_targets


def refuse_names(name: str, family: int | None) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, f"{name}: the fuzz resolver knows no names")


# Text biased towards the grammars' own characters reaches deeper than random unicode.
port_text = st.text(alphabet="0123456789-,: TtUuSx\t", max_size=40)
target_text = st.text(alphabet="0123456789abcdef.,-*/:% \n#xg", max_size=60)


@settings(max_examples=300, deadline=None)
@given(spec=st.one_of(st.text(), port_text))
def test_parse_ports_raises_only_port_spec_errors(spec: str) -> None:
    try:
        ps = parse_ports(spec)
    except PortSpecError as exc:
        assert exc.token is not None
        return
    assert isinstance(ps, PortSet) and len(ps) > 0
    assert parse_ports(ps.to_spec()) == ps


@settings(max_examples=300, deadline=None)
@given(
    spec=st.one_of(st.text(), target_text, st.lists(target_text, max_size=3)),
    exclude=st.one_of(st.none(), target_text),
)
def test_parse_targets_raises_only_target_spec_errors(
    spec: str | list[str], exclude: str | None
) -> None:
    try:
        ts = parse_targets(spec, exclude=exclude, resolver=refuse_names)
    except TargetSpecError as exc:
        assert exc.token is not None
        return
    assert isinstance(ts, TargetSet) and ts.size > 0
    assert ts.address(0) in ts and ts.address(-1) in ts


REAL_LIST = b"# lab hosts\n198.51.100.1 198.51.100.2,198.51.100.9\n203.0.113.0/30  # edge\n\n"


@settings(max_examples=200, deadline=None)
@given(
    cut=st.integers(0, len(REAL_LIST)),
    flips=st.lists(st.tuples(st.integers(0, len(REAL_LIST) - 1), st.integers(0, 255)),
                   max_size=4),
    tail=st.binary(max_size=64),
)
def test_a_mutated_target_file_raises_only_target_spec_errors_with_its_name(
    cut: int, flips: list[tuple[int, int]], tail: bytes
) -> None:
    import tempfile

    data = bytearray(REAL_LIST)
    for at, byte in flips:
        data[at] = byte
    with tempfile.NamedTemporaryFile(suffix=".txt") as fh:
        fh.write(bytes(data[:cut]) + tail)
        fh.flush()
        try:
            ts = parse_targets([], input_file=fh.name, resolver=refuse_names)
        except TargetSpecError as exc:
            assert fh.name in str(exc) or "-iL" in str(exc)
            return
    assert isinstance(ts, TargetSet) and ts.size > 0
