"""net.neigh: netlink neighbour messages parsed, the table read and edited, routes told
apart (on-link or through a gateway) -- on a veth lab."""

from __future__ import annotations

import shutil
import socket
import struct

import pytest

from prtip_nb.lab.veth import GATEWAY4, GATEWAY6, VethLab, host
from prtip_nb.net import neigh
from tests.conftest import need


def test_parse_a_neighbour_message() -> None:
    dst = socket.inet_aton("198.51.100.9")
    attrs = struct.pack("=HH", 8, neigh.NDA_DST) + dst
    attrs += struct.pack("=HH", 10, neigh.NDA_LLADDR) + b"\x02\x00\x00\x00\x00\x09" + b"\0\0"
    body = struct.pack("=BBHiHBB", socket.AF_INET, 0, 0, 7, neigh.NUD_REACHABLE, 0, 1) + attrs
    msg = struct.pack("=IHHII", 16 + len(body), neigh.RTM_NEWNEIGH, 0, 1, 0) + body
    assert list(neigh._parse(msg)) == [(neigh.RTM_NEWNEIGH, (4, dst, 7, neigh.NUD_REACHABLE,
                                                              True))]
    incomplete = body[:8] + struct.pack("=H", neigh.NUD_INCOMPLETE) + body[10:12] + attrs[:8]
    msg = struct.pack("=IHHII", 16 + len(incomplete), neigh.RTM_NEWNEIGH, 0, 1, 0) + incomplete
    assert list(neigh._parse(msg))[0][1] == (4, dst, 7, neigh.NUD_INCOMPLETE, False)


@pytest.mark.usefixtures("netns", "root")
def test_table_and_routes_on_a_lab() -> None:
    need(shutil.which("nsenter") is not None, "needs nsenter")
    with VethLab(up=[host("onlink", 10)], routed_up=[host("routed", 5)]) as lab:
        idx = socket.if_nametoindex(lab.ours)
        routes = neigh.Routes()
        assert routes.onlink(4, socket.inet_aton(host("onlink", 10))) == idx
        assert routes.onlink(4, socket.inet_aton(host("routed", 5))) == 0
        assert routes.onlink(6, socket.inet_pton(socket.AF_INET6, GATEWAY6)) == idx
        assert routes.onlink(6, socket.inet_pton(socket.AF_INET6, host("routed", 5, 6))) == 0
        # No route at all (a table lookup: nothing is sent).
        assert routes.onlink(4, socket.inet_aton("192.0.2.1")) == 0  # parse-only
        assert neigh.is_local(4, socket.inet_aton("198.51.100.1"))
        assert not neigh.is_local(4, socket.inet_aton(GATEWAY4))
        watch = neigh.NeighWatch()
        try:
            with socket.socket() as s:  # the kernel ARPs for the gateway
                s.settimeout(2)
                s.connect_ex((GATEWAY4, 9))
            gw = socket.inet_aton(GATEWAY4)
            assert any(d == gw and st & neigh.RESOLVED and ll
                       for _f, d, _i, st, ll in watch.events())
            assert any(d == gw for _f, d, _i, _s, _l in watch.dump(4))
            assert watch.delete(4, idx, gw)
            assert not any(d == gw for _f, d, _i, _s, _l in watch.dump(4))
            assert not watch.delete(4, idx, gw)  # gone already
        finally:
            watch.close()
