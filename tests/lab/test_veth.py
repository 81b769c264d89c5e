"""prtip_nb.lab.veth: the multi-host lab wires up what it promises and leaves nothing
behind, on errors too."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

from prtip_nb.lab.veth import GATEWAY4, SCANNER4, VethLab, host
from tests.conftest import need

pytestmark = pytest.mark.usefixtures("netns", "root")


def _links() -> set[str]:
    return {name for _i, name in socket.if_nameindex()}


@pytest.fixture(autouse=True)
def _tools() -> None:
    need(shutil.which("nsenter") is not None and shutil.which("unshare") is not None,
         "needs nsenter and unshare")


def test_hosts_answer_as_configured_and_everything_goes_on_exit() -> None:
    before = _links()
    with VethLab(up=[host("onlink", 10)], routed_up=[host("routed", 5), host("routed", 6, 6)],
                 tcp=[8443]) as lab:
        holder = lab.pid
        assert {lab.ours} <= _links()
        for addr in (GATEWAY4, host("onlink", 10), host("routed", 5), host("routed", 6, 6)):
            with socket.create_connection((addr, 8443), timeout=2) as s:  # via the lab
                assert s.getpeername()[0] == addr
        with socket.socket() as s:  # an address of the prefix that does not exist
            s.settimeout(0.5)
            assert s.connect_ex((host("routed", 7), 8443)) != 0
        assert lab.up_hosts[:1] == [GATEWAY4]
        assert "inet 203.0.113.5/32" in lab.target("ip", "addr", "show", "dev", "lo")
    assert _links() == before
    assert not os.path.exists(f"/proc/{holder}")


def test_an_error_inside_still_cleans_up() -> None:
    before = _links()
    with pytest.raises(RuntimeError, match="boom"), VethLab(up=[host("onlink", 11)]):
        raise RuntimeError("boom")
    assert _links() == before


def test_a_second_lab_in_the_same_namespace_refuses_and_leaves_the_first_alone() -> None:
    before = _links()
    with VethLab() as first:
        with pytest.raises(RuntimeError, match="one VethLab"), VethLab():
            pass
        assert first.ours in _links()
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((GATEWAY4, 9)) != 0  # refused: the lab still answers
            assert s.getsockname()[0] == SCANNER4
    assert _links() == before


def test_labs_get_distinct_interface_names() -> None:
    a, b = VethLab(), VethLab()
    assert a.ours != b.ours and a.theirs != b.theirs
    with pytest.raises(ValueError, match="outside"):
        VethLab(up=[host("routed", 5)])
    with pytest.raises(ValueError, match="scanner"):
        VethLab(up=[SCANNER4])
