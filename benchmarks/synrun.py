"""Helpers the SYN benchmarks run as separate processes (inside their private namespace).

``python -m benchmarks.synrun scan HOST PORTS [--rate R]``: import prtip_nb, warm up, then
    time one in-process ``Scan`` and print a JSON line (wall, open ports, send phase).
``python -m benchmarks.synrun throttle HOST ROUNDS``: rate=None against rate=1e9 (and
    against rate=None, the control), alternating in one process.
``python -m benchmarks.synrun pair HOST_A HOST_B ROUNDS``: full scans of two hosts,
    alternating in one process (IPv4 against IPv6).
``python -m benchmarks.synrun sendto HOST``: the bare raw-socket loop -- 65,535 prebuilt
    SYNs, one ``sendto`` each, nothing else -- and its rate: Python's ceiling here.
``python -m benchmarks.synrun sendmmsg HOST THREADS``: 65,535 prebuilt SYNs through
    sendmmsg as the scan sends them, nothing else: the kernel's floor (IPv4 against IPv6).
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


def _alternate(arms: list[tuple[str, str, float | None]], rounds: int
               ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Full scans of every arm (label, host, rate) once per round, in one process, the
    order rotating and reversing from round to round so that no arm always runs first or
    after the same neighbour. Wall time and process CPU time (all threads) per scan; a
    ``gc.collect()`` before each keeps the previous scan's garbage out of the next one."""
    import gc

    import prtip_nb as pn

    for host in dict.fromkeys(h for _, h, _ in arms):  # warm-up: first-use costs
        pn.Scan(host, "1", method="syn").start().wait()
        pn.Scan(host, "-", method="syn").start().wait()
    wall: dict[str, list[float]] = {a[0]: [] for a in arms}
    cpu: dict[str, list[float]] = {a[0]: [] for a in arms}
    for r in range(rounds):
        shift = r % len(arms)
        order = arms[shift:] + arms[:shift]
        for label, host, rate in order[::-1] if (r // len(arms)) % 2 else order:
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            res = pn.Scan(host, "-", method="syn", rate=rate).start().wait()
            wall[label].append(time.perf_counter() - t0)
            cpu[label].append(time.process_time() - c0)
            if res.tables["ports"].num_rows != 65535:
                raise RuntimeError(f"{label}: {res.tables['ports'].num_rows} rows")
    return wall, cpu


def _pair_median(a: list[float], b: list[float]) -> float:
    """Median of the per-round ratios a/b: each pair ran back to back."""
    import statistics

    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def cmd_throttle(host: str, rounds: int) -> dict:
    """What the limiter costs at a rate it never reaches (1e9 pps) against rate=None.

    Three arms per round in one process: rate=None, rate=1e9, and rate=None again as a
    control. A 2% effect is below the run-to-run spread of a full scan here (a few % on a
    quiet box, more under load), so: many rounds, rotating order, medians of per-round
    ratios, wall and CPU time, and the control arm, whose ratio to rate=None shows what
    the same method reports for no difference at all. The limiter's own time is also
    measured directly: every ``take()`` call, timed."""
    from prtip_nb.net import throttle

    spent = [0.0, 0]
    take = throttle.TokenBucket.take

    def timed_take(self: throttle.TokenBucket, want: int, cancel: object) -> int:
        t = time.perf_counter()
        try:
            return take(self, want, cancel)  # type: ignore[arg-type]
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += 1

    throttle.TokenBucket.take = timed_take  # type: ignore[method-assign]
    arms = [("none", host, None), ("1e9", host, 1e9), ("none_control", host, None)]
    wall, cpu = _alternate(arms, rounds)
    scans = len(wall["1e9"])
    return {"times": wall, "cpu": cpu,
            "overhead_wall": _pair_median(wall["1e9"], wall["none"]) - 1,
            "overhead_cpu": _pair_median(cpu["1e9"], cpu["none"]) - 1,
            "control_wall": _pair_median(wall["none_control"], wall["none"]) - 1,
            "control_cpu": _pair_median(cpu["none_control"], cpu["none"]) - 1,
            "limiter_calls_per_scan": spent[1] / scans, "limiter_s_per_scan": spent[0] / scans}


def cmd_pair(host_a: str, host_b: str, rounds: int) -> dict:
    """In-process full scans of two hosts (::1 and 127.0.0.1), alternating in one
    process: per-round ratios b/a, wall and CPU."""
    wall, cpu = _alternate([(host_a, host_a, None), (host_b, host_b, None)], rounds)
    return {"times": wall, "cpu": cpu,
            "ratio_wall": _pair_median(wall[host_b], wall[host_a]),
            "ratio_cpu": _pair_median(cpu[host_b], cpu[host_a])}


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


def cmd_sendmmsg(host: str, threads: int) -> dict:
    """The kernel's floor: 65,535 prebuilt SYNs sent as the scan sends them (sendmmsg, runs
    of 256, ``threads`` threads) with nothing else -- no capture, no receive thread, no
    Python between runs beyond the call. Process CPU time per probe is the kernel's."""
    import threading

    import numpy as np

    from prtip_nb.net.rawsock import RawSender
    from prtip_nb.probes.tcp import checksum_base, fill_checksums, syn_template

    fam = 6 if ":" in host else 4
    addr = socket.inet_pton(socket.AF_INET6 if fam == 6 else socket.AF_INET, host)
    tmpl = syn_template(fam, addr, 45679)
    value = int.from_bytes(addr, "big")
    hi, lo = (value >> 64 if fam == 6 else value), value & (2**64 - 1)
    ports = np.arange(1, 65536, dtype=np.uint64)
    seqs = (ports * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    csums = fill_checksums(checksum_base(tmpl, fam, addr, addr), ports, seqs)
    senders = []
    for k in range(threads):
        part = slice(k, None, threads)
        sender = RawSender(fam, tmpl, len(ports[part]))
        sender.load(len(ports[part]), hi, ports[part], seqs[part], csums[part],
                    dst_lo=lo, src=hi, src_lo=lo)
        senders.append(sender)

    def run(sender: RawSender) -> None:
        for off in range(0, sender.capacity, 256):
            sender.send(off, min(256, sender.capacity - off))

    for _ in range(2):  # the first pass warms up (page faults, kernel caches): untimed
        workers = [threading.Thread(target=run, args=(s,)) for s in senders]
        c0, t0 = time.process_time(), time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    for sender in senders:
        sender.close()
    return {"sent": len(ports), "send_s": dt, "cpu_s": cpu, "pps": len(ports) / dt}


def cmd_capture(seconds: float) -> dict:
    """Arrival times of SYN-only segments on lo: our probes, as the kernel saw them, with
    each one's source port (one per scan: the caller tells the scans apart by it)."""
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
    sports: list[int] = []

    def record(data: bytes, anc: list[tuple[int, int, bytes]]) -> None:
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == 35:
                sec, nsec = struct.unpack("qq", cdata[:16])
                times.append(sec + nsec * 1e-9)
                sports.append(struct.unpack_from("!H", data, (data[0] & 15) * 4)[0])

    end = time.monotonic() + seconds
    while time.monotonic() < end:  # until stdin closes (the scan is over) or the deadline
        ready, _, _ = select.select([sock, sys.stdin], [], [], 0.2)
        if sys.stdin in ready and not sys.stdin.readline():
            break
        if sock in ready:
            record(*sock.recvmsg(64, 64)[:2])
    while True:  # what arrived before the stop
        try:
            record(*sock.recvmsg(64, 64, socket.MSG_DONTWAIT)[:2])
        except BlockingIOError:
            break
    return {"count": len(times), "times": times, "sports": sports}


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "scan":
        rate = float(argv[4]) if len(argv) > 4 and argv[3] == "--rate" else None
        out = cmd_scan(argv[1], argv[2], rate)
    elif cmd == "throttle":
        out = cmd_throttle(argv[1], int(argv[2]))
    elif cmd == "pair":
        out = cmd_pair(argv[1], argv[2], int(argv[3]))
    elif cmd == "sendto":
        out = cmd_sendto(argv[1])
    elif cmd == "sendmmsg":
        out = cmd_sendmmsg(argv[1], int(argv[2]))
    elif cmd == "capture":
        out = cmd_capture(float(argv[1]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
