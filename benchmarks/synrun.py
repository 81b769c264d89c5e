"""Helpers the SYN benchmarks run as separate processes (inside their private namespace).

``python -m benchmarks.synrun scan HOST PORTS [--rate R]``: import prtip_nb, warm up, then
    time one in-process ``Scan`` and print a JSON line (wall, open ports, send phase).
``python -m benchmarks.synrun throttle HOST RUNS``: rate=None against rate=1e9, alternating.
``python -m benchmarks.synrun sendto HOST``: the bare raw-socket loop -- 65,535 prebuilt
    SYNs, one ``sendto`` each, nothing else -- and its rate: Python's ceiling here.
``python -m benchmarks.synrun capture SECONDS``: record the arrival times of TCP SYNs on
    ``lo`` (AF_PACKET, kernel timestamps) and print their count and rate windows.
"""

from __future__ import annotations

import ctypes
import json
import select
import socket
import struct
import sys
import time


def cmd_scan(host: str, ports: str, rate: float | None) -> dict:
    import prtip_nb as pn

    pn.Scan(host, "1", method="syn").start().wait()  # warm-up: imports, first-use costs
    t0 = time.perf_counter()
    sc = pn.Scan(host, ports, method="syn", rate=rate).start()
    res = sc.wait()
    wall = time.perf_counter() - t0
    import pyarrow.compute as pc

    ports_t = res.tables["ports"]
    opened = ports_t.filter(pc.equal(ports_t["state"].cast("string"), "open"))
    stats = getattr(sc, "engine_stats", {}) or {}
    return {"wall_s": wall, "rows": ports_t.num_rows,
            "open": sorted(opened["port"].to_pylist()), **stats}


def cmd_throttle(host: str, runs: int) -> dict:
    """Full scans alternating rate=None and an unreachable rate (1e9 pps), in one process:
    what the limiter itself costs, with process-to-process noise taken out."""
    import statistics

    import prtip_nb as pn

    pn.Scan(host, "1", method="syn").start().wait()
    times: dict[str, list[float]] = {"none": [], "1e9": []}
    for _ in range(runs):
        for label, rate in (("none", None), ("1e9", 1e9)):
            t0 = time.perf_counter()
            pn.Scan(host, "-", method="syn", rate=rate).start().wait()
            times[label].append(time.perf_counter() - t0)
    return {"no_rate_s": statistics.median(times["none"]),
            "unreachable_rate_s": statistics.median(times["1e9"]), "times": times}


def cmd_sendto(host: str) -> dict:
    from prtip_nb.net.rawsock import open_raw_socket
    from prtip_nb.probes.tcp import checksum_base, make_syn, syn_template

    fam = 6 if ":" in host else 4
    af = socket.AF_INET6 if fam == 6 else socket.AF_INET
    addr = socket.inet_pton(af, host)
    tmpl = syn_template(fam, addr, 45678)
    base = checksum_base(tmpl, fam, addr, addr)
    pkts = [make_syn(tmpl, fam, base, addr, p, p * 2654435761 & 0xFFFFFFFF)
            for p in range(1, 65536)]
    sock = open_raw_socket(fam)
    dest = (host, 0)
    send = sock.sendto
    t0 = time.perf_counter()
    for p in pkts:
        send(p, dest)
    dt = time.perf_counter() - t0
    return {"sent": len(pkts), "send_s": dt, "pps": len(pkts) / dt}


def cmd_capture(seconds: float) -> dict:
    """Arrival times of SYN-only segments on lo: our probes, as the kernel saw them."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    # BPF: IPv4 TCP with flags == SYN: keep 64 bytes, else drop.
    prog = [(0x30, 0, 0, 9), (0x15, 0, 4, 6), (0xB1, 0, 0, 0), (0x50, 0, 0, 13),
            (0x15, 0, 1, 0x02), (0x06, 0, 0, 64), (0x06, 0, 0, 0)]
    code = b"".join(struct.pack("HBBI", *i) for i in prog)
    buf = ctypes.create_string_buffer(code)
    sock.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", len(prog), ctypes.addressof(buf)))
    sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
    sock.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
    sock.bind(("lo", 0x0800))
    print("READY", flush=True)
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # until stdin closes (the scan is over) or the deadline
        ready, _, _ = select.select([sock, sys.stdin], [], [], 0.2)
        if sys.stdin in ready and not sys.stdin.readline():
            break
        if sock not in ready:
            continue
        _data, anc, _flags, _addr = sock.recvmsg(64, 64)
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == 35:
                sec, nsec = struct.unpack("qq", cdata[:16])
                times.append(sec + nsec * 1e-9)
    while True:  # what arrived before the stop
        try:
            _data, anc, _flags, _addr = sock.recvmsg(64, 64, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == 35:
                sec, nsec = struct.unpack("qq", cdata[:16])
                times.append(sec + nsec * 1e-9)
    return {"count": len(times), "times": times}


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "scan":
        rate = float(argv[4]) if len(argv) > 4 and argv[3] == "--rate" else None
        out = cmd_scan(argv[1], argv[2], rate)
    elif cmd == "throttle":
        out = cmd_throttle(argv[1], int(argv[2]))
    elif cmd == "sendto":
        out = cmd_sendto(argv[1])
    elif cmd == "capture":
        out = cmd_capture(float(argv[1]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
