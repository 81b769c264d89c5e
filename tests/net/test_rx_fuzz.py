"""Property-based tests of the receive-path parsers: generated malformed packets and
mutated valid ones, each test within a fixed budget (``max_examples``, no deadline).

The SYN and UDP receivers are fed whole TPACKET_V3 ring blocks built here (pure logic:
no socket is opened), so the block walk, the strided fast path, the gather path and the
per-packet ICMP path all see hostile frames. The properties a user relies on:

- no parser raises, whatever the bytes (a raise used to end the scan);
- a frame is judged by its first ``snap`` bytes only: what lies after them in the ring
  (an older packet) changes nothing;
- a valid reply in a block full of garbage still gets its verdict, exactly once.
"""

from __future__ import annotations

import random
import socket
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prtip_nb.engine.synrx import (
    _HDR,
    CLOSED,
    ICMP4,
    ICMP6,
    IGNORED,
    MALFORMED,
    OPEN,
    Receiver,
    _offsets,
    parse_icmp_error,
)
from prtip_nb.engine.udprx import UdpReceiver
from prtip_nb.net import neigh
from prtip_nb.net.counters import RttEstimator
from prtip_nb.net.synstate import Answered, HostTable, PortIndex
from prtip_nb.probes import ping
from prtip_nb.probes.cookie import CookieKey, cookie
from prtip_nb.probes.records import DTYPE as RECORD_DTYPE
from prtip_nb.probes.tcp import syn_template
from prtip_nb.targets import PortSet, parse_targets
from tests.net import hostile

BUDGET = settings(max_examples=150, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SPORT = 47500
PORTS = (1, 100)  # the scanned ports
NET = 80  # where a frame's packet starts (tpacket3_hdr + sockaddr_ll, aligned)
HOSTS = {4: hostile.LO4, 6: hostile.LO6}


class _Out:
    def __init__(self) -> None:
        self.records: list[np.ndarray] = []

    def emit(self, index: int, code: int, rtt: float | None, ttl: int = 0) -> None:
        raise AssertionError("receivers write record arrays")

    def write(self, records: bytes) -> None:
        self.records.append(np.frombuffer(records, RECORD_DTYPE))

    def tick(self) -> None:
        pass

    def verdicts(self) -> list[tuple[int, int]]:
        return [(int(r["index"]), int(r["code"])) for a in self.records for r in a]


class _NoRing:
    rings: list[object] = []


def _receiver(family: int, cls: type[Receiver] = Receiver) -> tuple[Receiver, _Out]:
    targets = parse_targets(HOSTS[family])
    src = socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, HOSTS[family])
    hosts = HostTable(targets, CookieKey(bytes(range(16))), SPORT,
                      {family: syn_template(family, src, SPORT)})
    total = PORTS[1] - PORTS[0] + 1
    out = _Out()
    rx = cls(capture=_NoRing(), hosts=hosts,  # type: ignore[arg-type]
             ports=PortIndex(PortSet(tcp=[PORTS])), answered=Answered(total), sport=SPORT,
             out=out, rtt=RttEstimator(1.0, 0.1, 1.0), total=total, t_base=0.0,
             record_dtype=RECORD_DTYPE)
    return rx, out


def _key(rx: Receiver) -> int:
    return rx.hosts.info(0).key


def _tcp_reply(family: int, key: int, port: int, flags: int) -> bytes:
    seg = hostile.tcp(port, SPORT, 7, (cookie(key, port) + 1) & 0xFFFFFFFF, flags)
    return hostile.ip4(6, seg) if family == 4 else hostile.ip6(6, seg)


def _icmp_error(family: int, key: int, port: int) -> bytes:
    probe = hostile.tcp(SPORT, port, cookie(key, port), 0, 0x02)
    if family == 4:
        return hostile.ip4(1, hostile.icmp(3, 13, hostile.ip4(6, probe)))
    return hostile.ip6(58, hostile.icmp(1, 1, hostile.ip6(6, probe)))


def _block(frames: list[bytes], *, uniform: bool, tail_seed: int) -> tuple[np.ndarray, int]:
    """A ring block holding ``frames``: each a tpacket3_hdr with snap = len(frame), the
    packet at NET, then bytes that are no part of it (``tail_seed`` picks them)."""
    tails = random.Random(tail_seed)
    slot = [-(-(NET + max(len(f), 160)) // 16) * 16 for f in frames]
    if uniform:
        slot = [max(slot)] * len(frames)
    first = 48
    arr = np.zeros(first + sum(slot) + 64, np.uint8)
    off = first
    for k, (frame, size) in enumerate(zip(frames, slot, strict=True)):
        hdr = np.zeros(1, _HDR)
        hdr["next"] = 0 if k == len(frames) - 1 else size
        hdr["sec"], hdr["nsec"], hdr["snap"], hdr["net"] = 1_700_000_000, k, len(frame), NET
        arr[off : off + _HDR.itemsize] = np.frombuffer(hdr.tobytes(), np.uint8)
        arr[off + NET : off + size] = np.frombuffer(tails.randbytes(size - NET), np.uint8)
        arr[off + NET : off + NET + len(frame)] = np.frombuffer(frame, np.uint8)
        off += size
    return arr, first


def _mutate(data: bytes, cut: int, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data[: max(0, len(data) - cut)])
    for at, value in edits:
        if out:
            out[at % len(out)] = value
    return bytes(out)


edits = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4)
garbage = st.binary(min_size=0, max_size=140)


def _hostile_frames(family: int, key: int, rng: random.Random) -> list[bytes]:
    """Valid-looking material to mutate: the live test's malformed packets, and valid
    replies and errors for the scanned ports."""
    make = hostile.syn_stream4 if family == 4 else hostile.syn_stream6
    out = make(SPORT, [5], rng)
    out += [_tcp_reply(family, key, 9, 0x12), _tcp_reply(family, key, 10, 0x14),
            _icmp_error(family, key, 11)]
    return out


@pytest.mark.parametrize("family", [4, 6])
@BUDGET
@given(data=st.data(), uniform=st.booleans(), seeds=st.tuples(st.integers(0, 2**32),
                                                              st.integers(0, 2**32)))
def test_syn_receiver_survives_any_block_and_reads_only_snap_bytes(
        family: int, data: st.DataObject, uniform: bool, seeds: tuple[int, int]) -> None:
    rx, _ = _receiver(family)
    material = _hostile_frames(family, _key(rx), random.Random(seeds[0]))
    mutated = st.builds(_mutate, st.sampled_from(material), st.integers(0, 40), edits)
    junk = data.draw(st.lists(st.one_of(garbage, mutated), max_size=12))
    valid = _tcp_reply(family, _key(rx), 5, 0x12)
    frames = [valid, *junk]
    results = []
    for tail in seeds:  # the same frames over different stale bytes
        rx, out = _receiver(family)
        arr, first = _block(frames, uniform=uniform, tail_seed=tail)
        rx._block(family, arr, first, len(frames))
        results.append((sorted(out.verdicts()), dict(rx.stats)))
    assert results[0] == results[1], "a verdict depended on bytes past a frame's snap"
    verdicts = results[0][0]
    assert (5 - PORTS[0], OPEN) in verdicts  # the valid reply, among any amount of junk
    indices = [j for j, _ in verdicts]
    assert len(indices) == len(set(indices)) and all(0 <= j < 100 for j in indices)
    fam_icmp = ICMP4 if family == 4 else ICMP6
    assert {c for _, c in verdicts} <= {OPEN, CLOSED} | set(range(fam_icmp, fam_icmp + 256))


@pytest.mark.parametrize("family", [4, 6])
@BUDGET
@given(data=st.data(), seeds=st.tuples(st.integers(0, 2**32), st.integers(0, 2**32)))
def test_udp_receiver_survives_any_block_and_reads_only_snap_bytes(
        family: int, data: st.DataObject, seeds: tuple[int, int]) -> None:
    rx, _ = _receiver(family, UdpReceiver)
    make = hostile.udp_stream4 if family == 4 else hostile.udp_stream6
    material = make(SPORT, [5, 6], random.Random(seeds[0]))
    mutated = st.builds(_mutate, st.sampled_from(material), st.integers(0, 40), edits)
    junk = data.draw(st.lists(st.one_of(garbage, mutated), max_size=12))
    reply = hostile.udp(5, SPORT, b"hi")
    valid = hostile.ip4(17, reply) if family == 4 else hostile.ip6(17, reply)
    frames = [valid, *junk]
    results = []
    for tail in seeds:
        rx, out = _receiver(family, UdpReceiver)
        arr, first = _block(frames, uniform=False, tail_seed=tail)
        rx._block(family, arr, first, len(frames))
        results.append((sorted(out.verdicts()), dict(rx.stats)))
    assert results[0] == results[1], "a verdict depended on bytes past a frame's snap"
    assert (5 - PORTS[0], OPEN) in results[0][0]


@BUDGET
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1),
                          st.integers(0, 2**32 - 1)), min_size=1, max_size=8),
       st.integers(0, 4096))
def test_block_walk_stays_inside_its_block(heads: list[tuple[int, int, int]], end: int) -> None:
    """tpacket3 headers with any next offset, snap and network offset: the walk and both
    parse paths stay inside the block (numpy raises on a read outside the array)."""
    arr = np.zeros(4096, np.uint8)
    first = 48
    for k, (nxt, net, snap) in enumerate(heads):
        at = first + 64 * k
        struct.pack_into("<IIII", arr, at, nxt, 0, 0, snap)
        struct.pack_into("<H", arr, at + 26, net)
    end = max(end, first)
    offs = _offsets(arr, first, len(heads), end)
    assert len(offs) <= len(heads)
    assert all(first <= o <= end - _HDR.itemsize for o in offs.tolist())
    for cls in (Receiver, UdpReceiver):
        for family in (4, 6):
            rx, _ = _receiver(family, cls)
            rx._block(family, arr[:end], first, len(heads))


@pytest.mark.parametrize("family", [4, 6])
@BUDGET
@given(data=st.data())
def test_icmp_error_parser_checks_every_length(family: int, data: st.DataObject) -> None:
    rx, _ = _receiver(family)
    valid = _icmp_error(family, _key(rx), 11)
    got = parse_icmp_error(family, valid)
    assert not isinstance(got, int) and got[4] == 11
    mutated = st.builds(_mutate, st.just(valid), st.integers(0, len(valid)), edits)
    packet = data.draw(st.one_of(garbage, mutated))
    got = parse_icmp_error(family, packet)
    if isinstance(got, int):
        assert got in (IGNORED, MALFORMED)
    else:  # whatever it read, it read from within the packet
        code, src, dst, sport, dport, seq = got
        assert len(src) == len(dst) == (4 if family == 4 else 16)
        assert 0 <= sport < 65536 and 0 <= dport < 65536 and 0 <= seq < 2**32


def test_the_reported_packet_is_malformed_not_a_crash() -> None:
    """Outer and quoted IPv4 headers of 60 bytes: the quoted TCP header starts at byte
    128, past the capture's snap length."""
    pkt = hostile.syn_stream4(SPORT, [5], random.Random(1))[0][:128]
    assert parse_icmp_error(4, pkt) == MALFORMED


@BUDGET
@given(data=st.data())
def test_ping_parsers_take_any_bytes(data: st.DataObject) -> None:
    key = 0x0123456789ABCDEF
    src4, src6 = socket.inet_aton("203.0.113.7"), socket.inet_pton(socket.AF_INET6, "::7")
    keys = {src4: key, src6: key}
    valid4 = hostile.ip4(1, hostile.icmp(0, 0, struct.pack("!Q", key), 0x4242 << 16),
                         src="203.0.113.7")
    assert ping.parse_icmp4(valid4, 0x4242, keys) == ("echo-reply", 4, src4, 0)
    syn_ack = hostile.tcp(443, SPORT, 1, (cookie(key, 443) + 1) & 0xFFFFFFFF, 0x12)
    assert ping.parse_tcp(6, syn_ack, src6, SPORT, keys) == ("syn-ack", 6, src6, -1)
    mutated = st.builds(_mutate, st.sampled_from([valid4, valid4[20:], syn_ack,
                                                  hostile.ip4(6, syn_ack)]),
                        st.integers(0, 40), edits)
    packet = data.draw(st.one_of(garbage, mutated))
    for got in (ping.parse_icmp4(packet, 0x4242, keys), ping.parse_icmp6(packet, src6, 0x4242,
                                                                         keys),
                ping.parse_tcp(4, packet, None, SPORT, keys),
                ping.parse_tcp(6, packet, src6, SPORT, keys)):
        assert got is None or got[2] in keys


def _neigh_message(dst: bytes, state: int) -> bytes:
    attrs = struct.pack("=HH", 4 + len(dst), neigh.NDA_DST) + dst
    attrs += b"\0" * (-len(attrs) % 4)
    attrs += struct.pack("=HH", 10, neigh.NDA_LLADDR) + b"\x02\0\0\0\0\x01\0\0"
    body = struct.pack("=BBHiHBB", socket.AF_INET, 0, 0, 3, state, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), neigh.RTM_NEWNEIGH, 0, 1, 0) + body


@BUDGET
@given(data=st.data())
def test_netlink_neighbour_parser_takes_any_bytes(data: st.DataObject) -> None:
    dump = (_neigh_message(socket.inet_aton("198.51.100.9"), neigh.NUD_REACHABLE)
            + _neigh_message(socket.inet_aton("198.51.100.10"), neigh.NUD_INCOMPLETE)
            + struct.pack("=IHHIIi", 20, neigh.NLMSG_ERROR, 0, 1, 0, -1))
    whole = list(neigh._parse(dump))
    assert whole[0] == (neigh.RTM_NEWNEIGH, (4, socket.inet_aton("198.51.100.9"), 3,
                                            neigh.NUD_REACHABLE, True))
    packet = data.draw(st.one_of(st.binary(max_size=200),
                                 st.builds(_mutate, st.just(dump), st.integers(0, len(dump)),
                                           edits)))
    for typ, n in neigh._parse(packet):
        assert isinstance(typ, int)
        if n is not None and typ == neigh.RTM_NEWNEIGH:
            assert len(n[1]) <= len(packet)


class _Flaky(Receiver):
    """A receiver whose ICMP parser has a bug: it raises on one packet length."""

    def _icmp(self, fam: int, data: bytes, ttl: int, t: float) -> None:
        if len(data) == 77:
            raise ValueError("a parser bug")
        super()._icmp(fam, data, ttl, t)


class _Ring:
    def __init__(self, mm: np.ndarray, block_size: int) -> None:
        self.family, self.mm, self.block_size = 4, mm, block_size


class _TwoBlocks:
    """A capture that hands the receive loop two filled blocks, then stops it."""

    def __init__(self, arr: np.ndarray, bs: int, first: int, n: int) -> None:
        self.rings = [_Ring(arr, bs)]
        self.spans = [(first, n), (bs + first, n)]
        self.rx: Receiver | None = None

    def wait(self, timeout: float) -> None:
        pass

    def wake(self) -> None:
        pass

    def blocks(self):  # type: ignore[no-untyped-def]
        for first, n in self.spans:
            yield 4, self.rings[0].mm, first, n
        assert self.rx is not None
        self.rx.stop.set()


def test_a_parser_exception_loses_only_its_packet_and_is_reported_once() -> None:
    """The receive loop itself: a block whose parse raises is parsed again frame by frame;
    the other replies of the block keep their verdicts, the scan's thread goes on, and
    warnings() says so once for the whole scan."""
    probe, _ = _receiver(4)
    key = _key(probe)
    bad = hostile.ip4(1, b"\0" * 57)  # 77 bytes: the bug's trigger
    frames = [_tcp_reply(4, key, 5, 0x12), bad, _tcp_reply(4, key, 7, 0x14),
              _icmp_error(4, key, 11)]
    one, first = _block(frames, uniform=False, tail_seed=1)
    bs = len(one)
    capture = _TwoBlocks(np.concatenate([one, one]), bs, first, len(frames))
    rx, out = _receiver(4, _Flaky)
    rx = _Flaky(capture=capture, hosts=rx.hosts, ports=rx.ports,  # type: ignore[arg-type]
                answered=rx.answered, sport=SPORT, out=out, rtt=rx.rtt, total=rx.total,
                t_base=0.0, record_dtype=RECORD_DTYPE)
    capture.rx = rx
    rx._run()  # on this thread: it returns when the capture stops it
    assert rx.error is None
    assert sorted(out.verdicts()) == [(4, OPEN), (6, CLOSED), (10, ICMP4 + 13)]
    assert rx.stats["parse_errors"] == 2
    assert rx.stats["invalid"] >= 2 and rx.stats["duplicates"] == 3  # block 2 repeats 1
    (message,) = rx.warnings()
    assert "2 block(s)" in message and "ValueError: a parser bug" in message
