"""Golden ring blocks for the receive paths (SYN, UDP, ICMP errors), IPv4 and IPv6.

``blocks()`` builds TPACKET_V3 ring blocks holding valid replies (SYN-ACK, RST, UDP
answers), ICMP errors about our probes (from the target: closed; from a router:
filtered, every nmap code), duplicates, strays and the malformed frames of
tests/net/hostile.py. ``python -m tests.net.golden_rx`` runs them through the receivers
and writes ``data/rx_golden.npz``: the block bytes and the records they produced. The test
(test_rx_golden.py) feeds the stored bytes to today's receivers and wants the stored
records byte for byte: a receive path rewritten (probe modules, one round engine) must
classify exactly as the one it replaces.
"""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path

import numpy as np

from prtip_nb.engine.synrx import Receiver
from prtip_nb.engine.udprx import UdpReceiver
from prtip_nb.net.counters import RttEstimator
from prtip_nb.net.synstate import Answered, HostTable, PortIndex
from prtip_nb.probes.cookie import CookieKey, cookie
from prtip_nb.probes.records import DTYPE as RECORD_DTYPE
from prtip_nb.probes.tcp import syn_template
from prtip_nb.probes.udp import marker_of
from prtip_nb.targets import PortSet, parse_targets
from tests.net import hostile
from tests.net.test_rx_fuzz import _block

PATH = Path(__file__).with_name("data") / "rx_golden.npz"
SPORT = 47500
PORTS = (1, 64)
TARGETS = {4: "127.0.0.1,127.0.0.3", 6: "::1"}
SRC = {4: "127.0.0.1", 6: "::1"}
ROUTER = {4: "127.0.0.9", 6: "::9"}
KEY = CookieKey(bytes(range(16)))


class _Out:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def emit(self, index: int, code: int, rtt: float | None, ttl: int = 0) -> None:
        raise AssertionError("receivers write record arrays")

    def write(self, records: bytes) -> None:
        self.chunks.append(records)

    def tick(self) -> None:
        pass


class _NoRing:
    rings: list[object] = []


def receiver(kind: str, family: int) -> tuple[Receiver, _Out]:
    targets = parse_targets(TARGETS[family])
    src = socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, SRC[family])
    hosts = HostTable(targets, KEY, SPORT, {family: syn_template(family, src, SPORT)})
    ports = PortSet(tcp=[PORTS])  # UDP's engine maps its ports the same way
    total = (PORTS[1] - PORTS[0] + 1) * len(targets)
    out = _Out()
    cls = Receiver if kind == "syn" else UdpReceiver
    rx = cls(capture=_NoRing(), hosts=hosts,  # type: ignore[arg-type]
             ports=PortIndex(ports), answered=Answered(total), sport=SPORT, out=out,
             rtt=RttEstimator(1.0, 0.1, 1.0), total=total, t_base=0.0,
             record_dtype=RECORD_DTYPE)
    return rx, out


def _ip(family: int, proto: int, payload: bytes, src: str, dst: str) -> bytes:
    if family == 4:
        return hostile.ip4(proto, payload, src=src, dst=dst)
    return hostile.ip6(proto, payload, src=src, dst=dst)


def _key(rx: Receiver, host: str) -> int:
    fam = 4 if ":" not in host else 6
    addr = socket.inet_pton(socket.AF_INET if fam == 4 else socket.AF_INET6, host)
    return rx.hosts.info(rx.hosts.index(fam, addr)).key


def syn_frames(rx: Receiver, family: int, rng: random.Random) -> list[bytes]:
    src = SRC[family]
    hosts = TARGETS[family].split(",")
    icmp_proto, unreach = (1, 3) if family == 4 else (58, 1)
    codes = (0, 1, 2, 3, 9, 10, 13, 4) if family == 4 else (0, 1, 2, 3, 4, 5, 6, 7)
    out = []
    for port in range(PORTS[0], PORTS[1] + 1):
        host = hosts[port % len(hosts)]
        key = _key(rx, host)
        ack = (cookie(key, port) + 1) & 0xFFFFFFFF
        pick = port % 6
        if pick == 0:  # SYN-ACK, and a duplicate
            seg = hostile.tcp(port, SPORT, rng.getrandbits(32), ack, 0x12)
            out += [_ip(family, 6, seg, host, src)] * 2
        elif pick == 1:  # RST+ACK
            out.append(_ip(family, 6, hostile.tcp(port, SPORT, 0, ack, 0x14), host, src))
        elif pick in (2, 3):  # an ICMP error quoting the probe, from a router
            probe = _ip(family, 6, hostile.tcp(SPORT, port, cookie(key, port), 0, 0x02),
                        src, host)
            code = codes[port % len(codes)]
            out.append(_ip(family, icmp_proto, hostile.icmp(unreach, code, probe),
                           ROUTER[family], src))
        elif pick == 4:  # wrong cookie, wrong source port, a plain ACK: not verdicts
            out.append(_ip(family, 6, hostile.tcp(port, SPORT, 0, ack ^ 1, 0x12), host, src))
            out.append(_ip(family, 6, hostile.tcp(port, SPORT + 1, 0, ack, 0x12), host, src))
            out.append(_ip(family, 6, hostile.tcp(port, SPORT, 0, ack, 0x10), host, src))
    make = hostile.syn_stream4 if family == 4 else hostile.syn_stream6
    if family == 4:
        out += make(SPORT, [5, 7], rng)
    else:
        out += make(SPORT, [5, 7], rng)
    return out


def udp_frames(rx: Receiver, family: int, rng: random.Random) -> list[bytes]:
    src = SRC[family]
    hosts = TARGETS[family].split(",")
    icmp_proto, unreach, closed = (1, 3, 3) if family == 4 else (58, 1, 4)
    codes = (0, 1, 2, 9, 10, 13, 3) if family == 4 else (0, 1, 3, 5, 6, 4)
    out = []
    for port in range(PORTS[0], PORTS[1] + 1):
        host = hosts[port % len(hosts)]
        key = _key(rx, host)
        mark = marker_of(family, cookie(key, port))
        if family == 4:
            quoted = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, mark, 0, 64, 17, 0,
                                 socket.inet_aton(src), socket.inet_aton(host)) \
                + hostile.udp(SPORT, port)
        else:
            quoted = struct.pack("!IHBB16s16s", (6 << 28) | mark, 8, 17, 64,
                                 socket.inet_pton(socket.AF_INET6, src),
                                 socket.inet_pton(socket.AF_INET6, host)) \
                + hostile.udp(SPORT, port)
        pick = port % 5
        if pick == 0:  # an answer, and a duplicate
            out += [_ip(family, 17, hostile.udp(port, SPORT, b"hi"), host, src)] * 2
        elif pick == 1:  # port unreachable from the target: closed
            out.append(_ip(family, icmp_proto, hostile.icmp(unreach, closed, quoted),
                           host, src))
        elif pick == 2:  # from a router, every code
            out.append(_ip(family, icmp_proto,
                           hostile.icmp(unreach, codes[port % len(codes)], quoted),
                           ROUTER[family], src))
        elif pick == 3:  # a forged marker, and our own probe looped back
            bad = bytearray(quoted)
            bad[5 if family == 4 else 3] ^= 0x5A
            out.append(_ip(family, icmp_proto, hostile.icmp(unreach, closed, bytes(bad)),
                           host, src))
            out.append(_ip(family, 17, hostile.udp(SPORT, SPORT), src, src))
    make = hostile.udp_stream4 if family == 4 else hostile.udp_stream6
    out += make(SPORT, [6, 8], rng)
    return out


CASES = [(kind, fam, uniform) for kind in ("syn", "udp") for fam in (4, 6)
         for uniform in (False, True)]


def run(kind: str, family: int, arr: np.ndarray, first: int, n: int
        ) -> tuple[bytes, dict[str, int]]:
    """The records and counters a receiver writes for one stored block."""
    rx, out = receiver(kind, family)
    rx._block(family, arr, first, n)
    return b"".join(out.chunks), dict(rx.stats)


def make() -> dict[str, np.ndarray]:
    data: dict[str, np.ndarray] = {}
    for kind, fam, uniform in CASES:
        name = f"{kind}{fam}{'u' if uniform else 'g'}"
        rx, _ = receiver(kind, fam)
        frames = (syn_frames if kind == "syn" else udp_frames)(rx, fam, random.Random(fam))
        if uniform and kind == "syn":  # the strided fast path: only same-size frames
            frames = [f for f in frames if len(f) == len(frames[0])]
        arr, first = _block(frames, uniform=uniform, tail_seed=fam)
        recs, stats = run(kind, fam, arr, first, len(frames))
        data[f"{name}_block"] = arr
        data[f"{name}_meta"] = np.array([first, len(frames)], np.int64)
        data[f"{name}_records"] = np.frombuffer(recs, np.uint8)
        data[f"{name}_stats"] = np.array(sorted(stats.items()), dtype=object).astype(str)
    return data


if __name__ == "__main__":
    PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(PATH, **make())
    with np.load(PATH) as d:
        for kind, fam, uniform in CASES:
            name = f"{kind}{fam}{'u' if uniform else 'g'}"
            recs = d[f"{name}_records"].view(RECORD_DTYPE)
            print(name, int(d[f"{name}_meta"][1]), "frames ->", len(recs), "records, codes",
                  sorted(set(recs["code"].tolist())))
