"""SYN probe bytes, cookies, checksums and the rate limiter: pure logic, no packets sent."""

from __future__ import annotations

import random
import socket
import threading
import time

import numpy as np
import pytest

from prtip_nb.engine.syn import CLOSED, NO_RESPONSE, OPEN, verdict
from prtip_nb.engine.synrx import _HDR, _TCP4, _TCP6, ICMP4, ICMP6, _frames, _gather, _offsets
from prtip_nb.net.throttle import TokenBucket
from prtip_nb.probes import cookie, tcp

ADDRS = {
    4: ("127.0.0.1", "198.51.100.7", socket.AF_INET),
    6: ("::1", "2001:db8::5", socket.AF_INET6),
}


def packed(family: int) -> tuple[bytes, bytes]:
    src, dst, af = ADDRS[family]
    return socket.inet_pton(af, src), socket.inet_pton(af, dst)


@pytest.mark.parametrize("family", [4, 6])
def test_struct_template_is_byte_for_byte_scapys(family: int) -> None:
    src, dst = packed(family)
    rng = random.Random(family)
    for dport, seq in [(0, 0), (80, 12345), (65535, 0xFFFFFFFF)] + [
        (rng.randrange(65536), rng.getrandbits(32)) for _ in range(20)
    ]:
        sport = rng.randrange(1, 65536)
        ours = tcp.syn_template(family, src, sport, dst=dst, dport=dport, seq=seq)
        theirs = tcp.syn_template_scapy(family, src, sport, dst=dst, dport=dport, seq=seq)
        assert ours == theirs
        assert len(ours) == tcp.LAYOUTS[family].length


@pytest.mark.parametrize("family", [4, 6])
def test_patched_probes_are_valid_packets_like_nmaps(family: int) -> None:
    """make_syn and the numpy batch fill agree, and scapy finds every checksum valid."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    src, dst = packed(family)
    template = tcp.syn_template(family, src, 40000)
    base = tcp.checksum_base(template, family, src, dst)
    ports = np.array([1, 22, 443, 8080, 65535], np.uint64)
    seqs = np.array([0, 1, 0xDEADBEEF, 0x80000000, 0xFFFFFFFF], np.uint64)
    batch = tcp.fill_checksums(base, ports, seqs)
    lay = tcp.LAYOUTS[family]
    for port, seq, csum in zip(ports.tolist(), seqs.tolist(), batch.tolist(), strict=True):
        pkt = tcp.make_syn(template, family, base, dst, port, seq)
        assert int.from_bytes(pkt[lay.csum : lay.csum + 2], "big") == csum
        layer = IP if family == 4 else IPv6
        seg = layer(pkt)[TCP]
        assert (seg.dport, seg.seq, seg.flags, seg.window) == (port, seq, "S", 1024)
        assert seg.options == [("MSS", 1460)]
        fresh = layer(pkt)
        del fresh[TCP].chksum  # scapy recomputes a deleted checksum: it must agree
        assert layer(bytes(fresh))[TCP].chksum == seg.chksum
        if family == 4:
            assert tcp.checksum(pkt[:20]) == 0  # the IP header sums to zero


def test_cookies_vectorised_equal_scalar_and_depend_on_the_key() -> None:
    src, dst = packed(4)
    key = cookie.CookieKey(bytes(range(16)))
    hk = key.host_key(src, dst, 40000)
    ports = np.arange(1, 65536, dtype=np.uint64)
    vec = cookie.cookies(hk, ports).tolist()
    assert vec == [cookie.cookie(hk, p) for p in range(1, 65536)]
    assert all(0 <= c < 2**32 for c in vec)
    assert len(set(vec)) > 65500  # 32-bit values: a handful of collisions at most
    other = cookie.CookieKey(bytes(range(1, 17))).host_key(src, dst, 40000)
    assert sum(a == b for a, b in zip(vec, cookie.cookies(other, ports).tolist(),
                                      strict=True)) < 3
    # Every part of the 4-tuple changes the host key.
    assert len({hk, key.host_key(src, dst, 40001), key.host_key(dst, src, 40000),
                key.host_key(src, packed(4)[0], 40000)}) == 4
    assert key.host_key(*packed(6), 40000) != key.host_key(*packed(6)[::-1], 40000)


@pytest.mark.serial
def test_cookie_is_fast_enough_in_python() -> None:
    hk = cookie.CookieKey().host_key(*packed(4), 40000)
    n = 20000
    t0 = time.perf_counter()
    for p in range(n):
        cookie.cookie(hk, p)
    per = (time.perf_counter() - t0) / n
    assert per < 2e-6  # measured 0.4 µs; generous for a loaded CI box


def test_verdict_words_are_nmaps() -> None:
    assert verdict(OPEN) == ("open", "syn-ack")
    assert verdict(CLOSED) == ("closed", "reset")
    assert verdict(NO_RESPONSE) == ("filtered", "no-response")
    for code, reason in {0: "net-unreach", 1: "host-unreach", 2: "proto-unreach",
                         3: "port-unreach", 9: "net-prohibited", 10: "host-prohibited",
                         13: "admin-prohibited"}.items():
        assert verdict(ICMP4 + code) == ("filtered", reason)
    assert verdict(ICMP6 + 0) == ("filtered", "no-route")
    assert verdict(ICMP6 + 1) == ("filtered", "admin-prohibited")
    assert verdict(ICMP6 + 4) == ("filtered", "port-unreach")


class FakeTime:
    """A clock that moves only when the limiter waits: the test measures the limiter's
    arithmetic, not how busy the machine is (syn-rate benchmarks it in real time)."""

    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        return False


@pytest.mark.parametrize("rate", [50.0, 20000.0, 50000.0])
def test_token_bucket_hands_out_batches_at_the_rate(rate: float) -> None:
    fake = FakeTime()
    bucket = TokenBucket(rate, clock=fake.clock)
    grants: list[tuple[float, int]] = []
    while fake.now < 102.0:
        n = bucket.take(256, fake)  # type: ignore[arg-type]
        grants.append((fake.now, n))
        fake.now += 0.00002 * n  # sending takes a little time too
    sent = sum(n for _, n in grants)
    assert abs(sent / 2.0 / rate - 1) < 0.01
    assert max(n for _, n in grants) == bucket.batch == max(1, min(256, int(rate * 0.005)))
    windows: dict[int, int] = {}
    for t, n in grants:
        windows[int((t - 100.0) / 0.1)] = windows.get(int((t - 100.0) / 0.1), 0) + n
    assert max(windows.values()) <= max(2 * rate * 0.1, bucket.batch)
    # A stall is made up from the credit, within half a window's budget.
    fake.now += 0.2
    burst = bucket.take(10**6, fake)  # type: ignore[arg-type]
    assert burst <= bucket.batch
    assert bucket.tokens <= rate * 0.05


@pytest.mark.serial
def test_token_bucket_keeps_its_mean_in_real_time() -> None:
    bucket, cancel = TokenBucket(20000.0), threading.Event()
    t0, sent = time.monotonic(), 0
    while time.monotonic() - t0 < 0.3:
        sent += bucket.take(256, cancel)
    assert abs(sent / (time.monotonic() - t0) / 20000.0 - 1) < 0.15  # a loaded box: loose
    cancel.set()
    assert TokenBucket(0.5).take(10, cancel) == 0  # a cancelled wait gives nothing


def _ring_block(family: int, strides: list[int], net: int = 80) -> tuple[np.ndarray, int]:
    """A TPACKET_V3 block as the kernel fills it: frames of the given strides (the last
    frame's ``next`` is 0), each a SYN probe's IP + TCP header at offset ``net``."""
    src, dst = packed(family)
    arr = np.zeros(16384, np.uint8)
    first = off = 48
    for k, stride in enumerate(strides):
        pkt = tcp.make_syn(tcp.syn_template(family, src, 40000 + k), family, 0, dst, 1000 + k,
                           7919 * k)
        last = k == len(strides) - 1
        hdr = np.zeros(1, _HDR)
        hdr["next"], hdr["sec"], hdr["nsec"] = 0 if last else stride, 1_700_000_000 + k, k
        hdr["snap"], hdr["net"] = len(pkt), net
        arr[off : off + _HDR.itemsize] = np.frombuffer(hdr.tobytes(), np.uint8)
        arr[off + net : off + net + len(pkt)] = np.frombuffer(pkt, np.uint8)
        off += stride
    return arr, first


@pytest.mark.parametrize("family", [4, 6])
def test_block_views_read_what_a_gather_reads(family: int) -> None:
    dt = _TCP4 if family == 4 else _TCP6
    arr, first = _ring_block(family, [144] * 7)
    frames = _frames(arr, first, 7, dt)
    assert frames is not None
    hdr, rows, stride, net = frames
    offs = _offsets(arr, first, 7)
    assert (stride, net) == (144, 80) and list(offs) == [first + 144 * k for k in range(7)]
    for view, copy in ((hdr, _gather(arr, offs, _HDR)), (rows, _gather(arr, offs + net, dt))):
        for name in view.dtype.names:
            assert view[name].tolist() == copy[name].tolist(), name
    # (These are probes, read as replies: "tport" is the TCP source port.)
    assert rows["tport"].tolist() == list(range(40000, 40007))
    assert rows["myport"].tolist() == list(range(1000, 1007))
    # One frame longer than the rest (an ICMP error, say): no views; the walk finds them.
    arr, first = _ring_block(family, [144, 144, 272, 144, 144])
    assert _frames(arr, first, 5, dt) is None
    assert list(_offsets(arr, first, 5)) == [first + o for o in (0, 144, 288, 560, 704)]
    assert _frames(arr, first, 1, dt) is not None and _frames(arr, first, 0, dt) is None


@pytest.mark.usefixtures("netns")
def test_host_constants_in_bulk_equal_one_host_at_a_time() -> None:
    """HostTable fills new IPv4 hosts' key and checksum base in numpy (``_fill_v4``):
    the same values as ``info``'s scalar forms, for hosts with a route (lo) and without
    one (a zero source), in any order."""
    from prtip_nb.net.synstate import HostTable
    from prtip_nb.targets import parse_targets

    targets = parse_targets(["127.0.0.0/26", "198.51.100.0/28"])
    templates = {4: tcp.syn_template(4, bytes(4), 45678)}
    key = cookie.CookieKey(bytes(range(16)))
    bulk = HostTable(targets, key, 45678, templates)
    h = np.random.default_rng(7).permutation(targets.size)
    chunks = [bulk.constants(h[i : i + 17]) for i in range(0, len(h), 17)]
    got = [np.concatenate(parts) for parts in zip(*chunks, strict=True)]
    for k, x in enumerate(h.tolist()):
        info = HostTable(targets, key, 45678, templates).info(x)
        src = int.from_bytes(info.src, "big")
        assert (int(got[0][k]), int(got[1][k]), int(got[3][k])) == (info.key, info.base, src)
        assert info.key == key.host_key(info.src, info.dst, 45678)
    assert {bytes(4), socket.inet_pton(socket.AF_INET, "127.0.0.1")} <= set(bulk._sources)
    assert bulk._base0 is not None  # the bulk path ran, not the per-host fallback


@pytest.mark.usefixtures("netns", "root")
def test_sender_writes_each_ipv4_id() -> None:
    """The scan sets every IPv4 probe's id (never 0: the kernel's own pick is the slow
    path of a raw send); the rest of the template is untouched."""
    from prtip_nb.net.rawsock import RawSender

    template = tcp.syn_template(4, bytes(4), 45678)
    sender = RawSender(4, template, 8)
    try:
        ids = np.array([1, 0xFFFF, 0x1235], np.uint64)
        z = np.zeros(3, np.uint64)
        sender.load(3, z, z, z, z, ident=ids)
        got = [int.from_bytes(bytes(sender.packets[i, 4:6]), "big") for i in range(3)]
        assert got == [1, 0xFFFF, 0x1235]
        assert bytes(sender.packets[3, :44]) == template  # not loaded: the template's id 0
    finally:
        sender.close()


@pytest.mark.usefixtures("netns", "root")
def test_route_source_asks_each_destination_afresh_on_one_socket() -> None:
    """route_source reuses one UDP socket a thread, disconnected after each question: each
    destination still gets its own route's source, as a new socket gives (a socket
    connected again without the disconnect keeps its first source), IPv4 and IPv6, and
    a destination without a route gets zeros."""
    import subprocess

    from prtip_nb.net.synstate import route_source

    def run(cmd: str) -> None:
        subprocess.run(cmd.split(), check=True, capture_output=True)

    for name, v4, v6 in (("rsa", "198.51.100.1/24", "2001:db8:91::1/64"),
                         ("rsb", "203.0.113.1/24", "2001:db8:92::1/64")):
        run(f"ip link add {name} type veth peer name {name}p")
        run(f"ip link set {name} up")
        run(f"ip link set {name}p up")
        run(f"ip addr add {v4} dev {name}")
        run(f"ip -6 addr add {v6} dev {name} nodad")
    try:
        v4_dsts = ["198.51.100.4", "203.0.113.4", "127.0.0.1", "198.51.100.9", "198.18.0.1"]
        for fam, dsts in ((4, v4_dsts),
                          (6, ["2001:db8:91::5", "2001:db8:92::5", "::1", "2001:db8:91::7"])):
            af = socket.AF_INET if fam == 4 else socket.AF_INET6
            want = []
            for d in dsts:
                with socket.socket(af, socket.SOCK_DGRAM) as s:
                    try:
                        s.connect((d, 9))
                        want.append(socket.inet_pton(af, s.getsockname()[0]))
                    except OSError:
                        want.append(bytes(4 if fam == 4 else 16))
            got = [route_source(fam, socket.inet_pton(af, d)) for d in dsts]
            assert got == want and len(set(got)) == len(dsts) - 1, (fam, got)
    finally:
        run("ip link del rsa")
        run("ip link del rsb")
