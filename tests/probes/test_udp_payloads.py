"""UDP payload table, templates, markers and checksums: pure logic, nothing is sent."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from prtip_nb.engine.udprx import CLOSED, ICMP4, ICMP6, NO_RESPONSE, OPEN, udp_verdict
from prtip_nb.probes import udp


def test_table_covers_the_well_known_services() -> None:
    table = udp.payloads()
    names = {p.name for p in table.values()}
    assert {"dns", "ntp", "snmp", "netbios-ns", "ssdp", "mdns", "ike", "memcached"} <= names
    for port in (53, 123, 161, 137, 1900, 5353, 500, 11211):
        assert table[port].data and table[port].spec
    assert 80 not in table  # every other port: an empty datagram


def test_payloads_parse_as_their_protocols() -> None:
    """scapy (an independent encoder/decoder) reads each payload as what it claims."""
    from scapy.layers.dns import DNS
    from scapy.layers.isakmp import ISAKMP, ISAKMP_payload_SA
    from scapy.layers.netbios import NBNSHeader
    from scapy.layers.ntp import NTPHeader
    from scapy.layers.snmp import SNMP

    t = udp.payloads()
    dns = DNS(t[53].data)
    assert dns.qdcount == 1 and dns.qd[0].qtype == 2 and dns.qd[0].qname == b"."
    mdns = DNS(t[5353].data)
    assert mdns.qd[0].qname == b"_services._dns-sd._udp.local." and mdns.qd[0].qtype == 12
    ntp = NTPHeader(t[123].data)
    assert ntp.mode == 3 and ntp.version == 4 and len(t[123].data) == 48
    snmp = SNMP(t[161].data)
    assert snmp.community.val == b"public" and snmp.version.val == 0
    assert snmp.PDU.varbindlist[0].oid.val == "1.3.6.1.2.1.1.1.0"
    ike = ISAKMP(t[500].data)
    assert ike.length == len(t[500].data) == 80 and ike.exch_type == 2
    assert isinstance(ike.payload, ISAKMP_payload_SA)
    nb = NBNSHeader(t[137].data)
    assert nb.QDCOUNT == 1
    assert t[137].data.endswith(b"\x00\x00\x21\x00\x01")  # NBSTAT, IN
    assert t[1900].data.startswith(b"M-SEARCH * HTTP/1.1\r\n")
    assert t[1900].data.endswith(b"\r\n\r\n")
    assert t[11211].data[6:8] == b"\x00\x00" and t[11211].data[8:] == b"version\r\n"


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("payload", [b"", b"x", udp.payloads()[53].data])
def test_patched_probes_are_valid_udp(family: int, payload: bytes) -> None:
    """The batch fill (marker + checksum) gives packets scapy finds valid."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    af = socket.AF_INET if family == 4 else socket.AF_INET6
    src = socket.inet_pton(af, "198.51.100.1" if family == 4 else "2001:db8::1")
    dst = socket.inet_pton(af, "198.51.100.2" if family == 4 else "2001:db8::2")
    lay = udp.UDP_LAYOUTS[family]
    ports = np.array([1, 53, 161, 40000, 65535], np.uint64)
    cookies = np.array([0, 1, 0xFFFF0000, 0x12345678, 0xFFFFFFFF], np.uint64)
    marks = udp.markers(family, cookies)
    base = udp.addr_sum(src) + udp.addr_sum(dst) + udp.payload_base(45678, payload)
    csums = udp.fill_udp_checksums(base, ports)
    tmpl = bytearray(udp.udp_template(family, src, 45678, payload, dst=dst))
    for port, mark, csum, c in zip(ports.tolist(), marks.tolist(), csums.tolist(),
                                   cookies.tolist(), strict=True):
        pkt = bytearray(tmpl)
        pkt[lay.dport : lay.dport + 2] = port.to_bytes(2, "big")
        pkt[lay.seq : lay.seq + 4] = mark.to_bytes(4, "big")
        pkt[lay.csum : lay.csum + 2] = csum.to_bytes(2, "big")
        parsed = (IP if family == 4 else IPv6)(bytes(pkt))
        seg = parsed[UDP]
        want = seg.chksum
        del seg.chksum
        rebuilt = (IP if family == 4 else IPv6)(bytes(parsed))[UDP]
        assert rebuilt.chksum == want, (port, payload)
        assert seg.dport == port and bytes(seg.payload) == payload
        if family == 4:
            assert parsed.id == udp.marker_of(4, c) != 0
        else:
            assert parsed.fl == udp.marker_of(6, c)


def test_verdict_codes_are_nmaps_udp_words() -> None:
    assert udp_verdict(OPEN) == ("open", "udp-response")
    assert udp_verdict(CLOSED) == ("closed", "port-unreach")
    assert udp_verdict(NO_RESPONSE) == ("open|filtered", "no-response")
    assert udp_verdict(ICMP4 + 13) == ("filtered", "admin-prohibited")
    assert udp_verdict(ICMP4 + 3) == ("filtered", "port-unreach")  # from another address
    assert udp_verdict(ICMP6 + 1) == ("filtered", "admin-prohibited")


def test_the_syn_filter_is_unchanged_and_the_udp_one_keeps_udp() -> None:
    """capture.bpf_program grew a ``proto``; for TCP its bytes are what they were before
    (hashes taken from the SYN-only version)."""
    import hashlib
    import struct

    from prtip_nb.net.capture import bpf_program

    before = {4: "11bbc1b43756f27ff84c9fbdb5348d191a8d095f8bbb5ffa417d3c9541ae09d4",
              6: "7727fef009b5e16bc9d6e0d07b7ce6613b1f059d7a77cc8a81efd714a094adfc"}
    for fam, digest in before.items():
        assert hashlib.sha256(bpf_program(fam, 40000, 40001)).hexdigest() == digest
        udp_prog = [struct.unpack("HBBI", bpf_program(fam, 40000, 40001, 17)[i : i + 8])
                    for i in range(0, len(bpf_program(fam, 1, 1, 17)), 8)]
        assert (0x15, 0, udp_prog[3 if fam == 4 else 1][2], 17) == udp_prog[
            3 if fam == 4 else 1]  # jeq 17: UDP, else the ICMP branch
