"""A whole network behind one veth link: every address of a prefix answers, at scale.

The scanner is the *current* network namespace (a private one: ``scripts/in-netns``);
a child namespace, the responder, answers for a whole prefix of the benchmarking range
198.18.0.0/15 (RFC 2544) through a *local route* (``ip route add local PREFIX dev lo``):
its kernel owns every address of the prefix, so listeners bound to the wildcard address
are open on every host and every other TCP port answers RST::

    scanner ns (current)                          responder ns (child)
    pl<tag>a 203.0.113.254 <── veth ──> pl<tag>b 203.0.113.253 (gateway)
             2001:db8:ffff::1                    2001:db8:ffff::2
    route PREFIX via 203.0.113.253               [ingress -> ifb "plshape": tbf]
                                                 local route PREFIX dev lo
                                                 nft: drop set, counters
                                                 listeners on 0.0.0.0 / ::

- **Addresses.** The prefix (default 198.18.0.0/24) may be any prefix inside
  198.18.0.0/15, up to the whole /15 (131,072 addresses). The transit link lies *outside*
  the /15, on 203.0.113.253-254 (TEST-NET-3) and 2001:db8:ffff::/64, so no scanned
  address is ever the scanner or the gateway: inside the prefix no address is special,
  and the network and broadcast addresses of any prefix (198.18.0.0, 198.19.255.255 for
  the /15) answer like the rest, because a local route has no broadcast. Two addresses of
  VethLab's routed 203.0.113.0/24 are taken: do not run both labs in one namespace with
  203.0.113.253-254 as VethLab hosts. An optional IPv6 prefix (``prefix6=``, inside
  2001:db8::/32, outside 2001:db8:ffff::/64) is answered the same way.
- **Routing.** The scanner routes the prefix through the gateway, so its neighbour table
  holds the gateway alone however many addresses it probes (no ARP per target).
- **Hosts that drop everything**: ``drop=`` (addresses and sub-prefixes, e.g. a /24
  inside a /22) and/or ``drop_count=``/``drop_fraction=`` hosts drawn with ``seed=``
  (reproducible), in an nftables interval set at the responder's prerouting hook.
- **Scale.** In the responder: ``tcp_syncookies=1``, ``somaxconn`` and
  ``tcp_max_syn_backlog`` 65,535, listen backlog 65,535, and the listener accepts and
  closes at once, so SYN-ACKs keep coming at 100k+ SYN/s and the accept queue never
  fills during a connect scan; no conntrack (the rules are stateless).
- **UDP** (``udp=``): echo responders on every address (replies leave from the probed
  address, via IP_PKTINFO); closed UDP ports get the kernel's ICMP port unreachable,
  whose rate limits ``icmp_ratelimit_ms=`` and ``icmp_msgs_per_sec=`` set (per lab).
- **Bottleneck** (``bottleneck_pps=``): the link carries that many IPv4 SYN probes a
  second in the scanner -> responder direction and drops the excess, as a thin link
  would. Two shapers (``shaper=``):

  - ``"tbf"`` (default): a token-bucket filter with a queue of ``queue_ms`` (5 ms). It
    sits on the *responder's* side: what arrives on its veth is redirected (u32 +
    mirred) to an ifb device whose root qdisc is the tbf, so the scanner's own interface
    keeps no qdisc and its sends never see the drops. tbf charges a packet's
    length with its Ethernet header: 14 + 20 (IPv4) + 24 (TCP with the MSS option) = 58
    bytes a probe (78 for IPv6); the rate is set in those bytes. Measured at twice the
    capacity: +5% at 1k pps (the bucket), within 3% from 4k to 20k. Caveat: a *throttled*
    tbf costs about 20 us of kernel CPU per packet in the sending CPU's softirq, so a
    sender offering much more than ~30-50k pps is slowed by CPU rather than losing
    probes (docs/architecture.md, "Range lab").
  - ``"police"``: an nftables ``limit rate over`` at the responder's prerouting hook:
    that many packets a second with a burst of ``queue_ms`` (20 ms) of them, no queue. It
    costs the sender nothing (a Python sender kept 300-600k pps), so use it for
    capacities above ~20k pps.

  ``capacity_pps`` reads the configured rate back; ``link_stats()`` gives what the
  shaper passed and dropped, ``qdisc_stats()`` tbf's own counters, ``counters()`` what
  reached the responder's stack and what it answered.
- ``truth(ports)`` is the ground truth (``rangetruth.RangeTruth``: no per-cell objects).

Use as a context manager; everything (processes, interfaces) goes on exit, errors
included, and the namespace holder dies after ``HOLD_S`` in any case. The example runs
as root inside a private namespace (``scripts/in-netns python``), in about a second:

>>> import prtip_nb as pn
>>> from prtip_nb.lab import RangeLab
>>> with RangeLab("198.18.0.0/24", tcp=(80, 443), drop_count=16, seed=7) as lab:  # doctest: +SKIP
...     res = pn.scan(lab.host(1), ports="22,80,443", method="syn")
...     print(sorted(res.ports.query("state == 'open'").port), lab.truth([22, 80, 443]).counts())
[80, 443] {'open': 480, 'closed': 240, 'filtered': 48}
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from prtip_nb.errors import PrivilegeError
from prtip_nb.lab.childns import (
    HOLD_S,
    ChildLab,
    ChildNetns,
    lab_tag,
    run,
    scanner_ns_private,
    wait_v6_ready,
)
from prtip_nb.lab.rangetruth import Net, RangeTruth

__all__ = ["GATEWAY4", "GATEWAY6", "PREFIX4", "RANGE4", "SCANNER4", "SCANNER6",
           "SYN_FRAME4", "SYN_FRAME6", "RangeLab"]

RANGE4, PREFIX4 = "198.18.0.0/15", "198.18.0.0/24"
SCANNER4, GATEWAY4 = "203.0.113.254", "203.0.113.253"
SCANNER6, GATEWAY6, TRANSIT6 = "2001:db8:ffff::1", "2001:db8:ffff::2", "2001:db8:ffff::/64"
SYN_FRAME4 = 14 + 20 + 24  # what tbf charges for one IPv4 SYN probe (MSS option)
SYN_FRAME6 = 14 + 40 + 24
BACKLOG = 65535
_TABLE = "prtip_rangelab"
SHAPER = "plshape"  # the ifb in the responder namespace that carries the bottleneck
_MTU_FRAME = 1514  # tbf drops a packet bigger than its bucket: the bucket holds a full frame

# One process answers everything: TCP listeners that accept and close at once (so a
# connect scan never fills the accept queue; a FIN, not an RST, which would race the
# client's connect() and turn an open port into ECONNRESET) and UDP echo that replies
# *from the probed address* (a wildcard socket would answer from the gateway's address).
_RESPONDER = textwrap.dedent(
    """
    import os, selectors, socket, struct, sys, time
    tcp, udp, v6, backlog = (sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]))
    deadline = time.monotonic() + float(sys.argv[5])
    IP_PKTINFO, IPV6_RECVPKTINFO, IPV6_PKTINFO, IPV6_FREEBIND = 8, 49, 50, 78
    sel = selectors.DefaultSelector()
    fams = [(socket.AF_INET, "0.0.0.0")] + ([(socket.AF_INET6, "::")] if v6 else [])
    for fam, addr in fams:
        for kind, ports in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)):
            for port in filter(None, ports.split(",")):
                s = socket.socket(fam, kind)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if kind == socket.SOCK_DGRAM and fam == socket.AF_INET:
                    s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                elif kind == socket.SOCK_DGRAM:
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
                    # IPv6 sends only from assigned addresses unless freebind is set.
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
                s.bind((addr, int(port)))
                if kind == socket.SOCK_STREAM:
                    s.listen(backlog)
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ, kind)
    # LIFETIME: stdin is a pipe from the lab; EOF (the lab closed or died) ends us, and so
    # does the holder's deadline, so no responder outlives a crashed test.
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    print("READY", flush=True)
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=5):
            if key.data is None:
                if not os.read(0, 4096):
                    sys.exit(0)
                continue
            s = key.fileobj
            for _ in range(256):
                try:
                    if key.data == socket.SOCK_STREAM:
                        s.accept()[0].close()
                        continue
                    data, anc, _f, peer = s.recvmsg(2048, 256)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                reply_from = []
                for level, typ, raw in anc:
                    if level == socket.IPPROTO_IP and typ == IP_PKTINFO:
                        ifi, spec, dst = struct.unpack("I4s4s", raw[:12])
                        reply_from = [(level, typ, struct.pack("I4s4s", 0, dst, dst))]
                    elif level == socket.IPPROTO_IPV6 and typ == IPV6_PKTINFO:
                        reply_from = [(level, typ, raw[:16] + struct.pack("I", 0))]
                try:
                    s.sendmsg([data or b"prtip-lab"], reply_from, 0, peer)
                except OSError:
                    pass
    """
)


def _ports(ports: Iterable[int], what: str) -> tuple[int, ...]:
    out = tuple(sorted({int(p) for p in ports}))
    if any(not 0 < p < 65536 for p in out):
        raise ValueError(f"{what} ports must be 1-65535; got {list(out)}")
    return out


def _net(text: str, inside: str, what: str) -> Net:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{what} {text!r} is not a network ({exc}); write it as e.g. "
                         f"198.18.0.0/24, host bits zero") from None
    outer = ipaddress.ip_network(inside)
    if net.version != outer.version or not net.subnet_of(outer):  # type: ignore[arg-type]
        raise ValueError(f"{what} {net} is outside {outer}: a range lab only answers for "
                         f"documentation/benchmarking addresses")
    return net


class RangeLab(ChildLab):
    """A responder namespace answering for a whole prefix (see the module docstring).

    ``prefix``: inside 198.18.0.0/15 (default 198.18.0.0/24). ``prefix6``: optional,
    inside 2001:db8::/32. ``tcp``: ports open on every host (the rest reset). ``udp``:
    ports with an echo on every host. ``drop``: addresses or sub-prefixes that drop
    everything; ``drop_count`` / ``drop_fraction``: that many more IPv4 hosts, drawn
    with ``seed``. ``bottleneck_pps``: IPv4 SYN probes per second the link carries
    (None: no limit); ``shaper``: "tbf" or "police"; ``queue_ms``: its queue (tbf,
    default 5 ms) or burst (police, default 20 ms). ``icmp_ratelimit_ms`` /
    ``icmp_msgs_per_sec``: the responder's ICMP limits (None: the kernel's defaults,
    1000 ms per peer and 1000/s; 0 and 1,000,000 make closed UDP ports answer at once).
    """

    def __init__(self, prefix: str = PREFIX4, *, prefix6: str | None = None,
                 tcp: Sequence[int] = (80, 443), udp: Sequence[int] = (),
                 drop: Sequence[str] = (), drop_count: int | None = None,
                 drop_fraction: float | None = None, seed: int = 0,
                 bottleneck_pps: float | None = None, shaper: str = "tbf",
                 queue_ms: float | None = None,
                 icmp_ratelimit_ms: int | None = None, icmp_msgs_per_sec: int | None = None,
                 tag: str | None = None) -> None:
        self.prefix = _net(prefix, RANGE4, "prefix")
        self.prefix6 = _net(prefix6, "2001:db8::/32", "prefix6") if prefix6 else None
        if self.prefix6 is not None and self.prefix6.overlaps(ipaddress.ip_network(TRANSIT6)):
            raise ValueError(f"prefix6 {self.prefix6} overlaps the transit link {TRANSIT6}")
        self.tcp, self.udp = _ports(tcp, "tcp"), _ports(udp, "udp")
        self.dropped = self._drops(drop, drop_count, drop_fraction, seed)
        if bottleneck_pps is not None and not 1 <= bottleneck_pps <= 10_000_000:
            raise ValueError(f"bottleneck_pps must be 1-10,000,000 probes/s, not {bottleneck_pps}")
        if queue_ms is None:
            # POLICE BURST: a policer has no queue, so its burst must absorb the receive
            # path's batching (the kernel's backlog hands over up to 1,000 packets at once
            # when the CPU is busy); at 5 ms it passed as little as 82% of 50k pps then.
            queue_ms = 5.0 if shaper == "tbf" else 20.0
        if not 0.5 <= queue_ms <= 1000:
            raise ValueError(f"queue_ms must be 0.5-1000 ms, not {queue_ms}")
        if shaper not in ("tbf", "police"):
            raise ValueError(f"shaper must be 'tbf' or 'police', not {shaper!r}")
        self.bottleneck_pps, self.shaper, self.queue_ms = bottleneck_pps, shaper, queue_ms
        self.sysctls = {"net.ipv4.tcp_syncookies": 1, "net.core.somaxconn": BACKLOG,
                        "net.ipv4.tcp_max_syn_backlog": BACKLOG,
                        # A SYN-ACK whose RST the bottleneck dropped comes back twice, not 6x.
                        "net.ipv4.tcp_synack_retries": 1}
        if icmp_ratelimit_ms is not None:
            self.sysctls["net.ipv4.icmp_ratelimit"] = int(icmp_ratelimit_ms)
            self.sysctls["net.ipv6.icmp.ratelimit"] = int(icmp_ratelimit_ms)
        if icmp_msgs_per_sec is not None:
            self.sysctls["net.ipv4.icmp_msgs_per_sec"] = int(icmp_msgs_per_sec)
            # The global bucket refills once a jiffy and holds icmp_msgs_burst (50): left
            # at 50 it caps errors at 50 a jiffy (12,500/s at HZ=250) whatever the rate.
            self.sysctls["net.ipv4.icmp_msgs_burst"] = max(50, int(icmp_msgs_per_sec) // 100)
        tag = lab_tag(tag)
        self.ours, self.theirs = f"pl{tag}a", f"pl{tag}b"
        self.ns = ChildNetns(HOLD_S)
        self.responder: subprocess.Popen[Any] | None = None  # the listeners' process
        self._running = self._made_link = False

    def _drops(self, drop: Sequence[str], count: int | None, fraction: float | None,
               seed: int) -> tuple[Net, ...]:
        nets: list[Net] = []
        for text in drop:
            net = ipaddress.ip_network(text, strict=False)
            if not any(net.version == p.version and net.subnet_of(p)  # type: ignore[arg-type]
                       for p in (self.prefix, self.prefix6) if p is not None):
                raise ValueError(f"drop {text} is outside the lab's prefix {self.prefix}"
                                 + (f" and {self.prefix6}" if self.prefix6 else ""))
            nets.append(net)
        if count is not None and fraction is not None:
            raise ValueError("give drop_count or drop_fraction, not both")
        n = self.prefix.num_addresses
        if fraction is not None:
            if not 0 <= fraction <= 1:
                raise ValueError(f"drop_fraction must be within 0-1, not {fraction}")
            count = round(n * fraction)
        if count:
            # Drawn among the hosts not already dropped, so the count is exact.
            taken = {int(a) - int(self.prefix.network_address) for net in nets
                     if net.version == 4 for a in net}
            free = n - len(taken)
            if not 0 <= count <= free:
                raise ValueError(f"drop_count {count} is more than the {free} hosts left")
            rng = random.Random(seed)
            picked = rng.sample([i for i in range(n) if i not in taken] if taken else range(n),
                                count)
            base = self.prefix.network_address
            nets += [ipaddress.ip_network(base + i) for i in picked]
        return (*ipaddress.collapse_addresses(n for n in nets if n.version == 4),
                *ipaddress.collapse_addresses(n for n in nets if n.version == 6))

    def __repr__(self) -> str:
        parts = [f"{self.prefix}"] + ([f"{self.prefix6}"] if self.prefix6 else [])
        parts += [f"tcp={list(self.tcp)}"] + ([f"udp={list(self.udp)}"] if self.udp else [])
        dropped = sum(n.num_addresses for n in self.dropped if n.version == 4)
        parts += [f"dropped={dropped} hosts"] if dropped else []
        if self.bottleneck_pps is not None:
            parts.append(f"bottleneck={self.bottleneck_pps:g} pps ({self.shaper})")
        state = "running" if self._running else "stopped"
        return f"<RangeLab {' '.join(parts)} {state}>"

    # -- what a test reads ------------------------------------------------------------------
    def host(self, i: int) -> str:
        """Address number ``i`` of the prefix (negative: from the end)."""
        n = self.prefix.num_addresses
        if not -n <= i < n:
            raise IndexError(f"{self.prefix} has {n} addresses; {i} is out of range")
        return str(self.prefix.network_address + (i % n))

    def truth(self, ports: Iterable[int], proto: str = "tcp") -> RangeTruth:
        """nmap's state per (host, port) for ``ports`` (rangetruth.RangeTruth)."""
        prefixes = [p for p in (self.prefix, self.prefix6) if p is not None]
        return RangeTruth.build(prefixes, ports, proto,
                                self.tcp if proto == "tcp" else self.udp, self.dropped)

    @property
    def capacity_pps(self) -> float | None:
        """IPv4 SYN probes per second the bottleneck passes (None without one): for tbf
        read back from the kernel's rate (IPv6 probes: ``* SYN_FRAME4 / SYN_FRAME6``, other
        packets by their size); for police, packets of any size per second."""
        if self.bottleneck_pps is None:
            return None
        if not self._running or self.shaper == "police":
            return float(round(self.bottleneck_pps))  # nft's limit takes whole packets/s
        (qdisc,) = [q for q in self._qdiscs() if q.get("kind") == "tbf"]
        return float(qdisc["options"]["rate"]) / SYN_FRAME4

    def link_stats(self) -> dict[str, int]:
        """What the bottleneck passed and dropped (packets) since the lab started."""
        if self.bottleneck_pps is None:
            raise RuntimeError("this lab has no bottleneck (bottleneck_pps=None)")
        if self.shaper == "tbf":
            q = self.qdisc_stats()
            return {"passed": q["packets"], "dropped": q["drops"]}
        c = self.counters()
        return {"passed": c["link_in"] - c["policed"], "dropped": c["policed"]}

    def qdisc_stats(self) -> dict[str, int]:
        """The bottleneck's counters: sent packets/bytes, dropped, overlimits, backlog."""
        for q in self._qdiscs():
            if q.get("kind") == "tbf":
                return {"packets": q["packets"], "bytes": q["bytes"], "drops": q["drops"],
                        "overlimits": q["overlimits"], "backlog": q.get("backlog", 0)}
        raise RuntimeError("this lab has no tbf bottleneck (bottleneck_pps=None or "
                           "shaper='police': see link_stats)")

    def counters(self) -> dict[str, int]:
        """Packets seen in the responder: SYNs in, SYN-ACKs and RSTs out, dropped (by the
        drop set), since the lab started."""
        out = json.loads(self.target("nft", "-j", "list", "counters", "table", "inet", _TABLE))
        return {c["counter"]["name"]: c["counter"]["packets"]
                for c in out["nftables"] if "counter" in c}

    def _qdiscs(self) -> list[dict[str, Any]]:
        return list(json.loads(self.target("tc", "-s", "-j", "qdisc", "show", "dev", SHAPER)))

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> RangeLab:
        if not scanner_ns_private():
            raise PrivilegeError(
                "RangeLab wires this network namespace to a lab: run it inside a private one "
                "(scripts/in-netns CMD, or sudo unshare --net sh -c 'ip link set lo up && CMD')")
        if SCANNER4 in run("ip", "-4", "-o", "addr", "show"):
            raise RuntimeError(f"another RangeLab already holds {SCANNER4} in this namespace: "
                               "one RangeLab per scanner namespace at a time")
        try:
            self.ns.start()
            self._running = True
            self._wire()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Kill the responder's processes and holder, remove the veth pair. Idempotent."""
        self._running = False
        self.ns.close()  # kills the responder too
        # The peer went with the namespace, and ours with it; do not count on the timing.
        if self._made_link:  # never delete a same-named link that another lab made
            subprocess.run(["ip", "link", "del", self.ours], capture_output=True)
            self._made_link = False

    def _wire(self) -> None:
        self.ns.add_veth(self.ours, self.theirs)
        self._made_link = True
        mine = [f"addr add {SCANNER4} peer {GATEWAY4} dev {self.ours}",
                f"link set {self.ours} up",
                f"route add {self.prefix} via {GATEWAY4} dev {self.ours} src {SCANNER4}"]
        theirs = ["link set lo up",
                  f"addr add {GATEWAY4} peer {SCANNER4} dev {self.theirs}",
                  f"link set {self.theirs} up",
                  f"route add local {self.prefix} dev lo"]
        if self.prefix6 is not None:
            mine[1:1] = [f"addr add {SCANNER6}/64 dev {self.ours} nodad"]
            mine.append(f"route add {self.prefix6} via {GATEWAY6} dev {self.ours}")
            theirs[2:2] = [f"addr add {GATEWAY6}/64 dev {self.theirs} nodad"]
            theirs.append(f"route add local {self.prefix6} dev lo")
        run("ip", "-batch", "-", input="\n".join(mine) + "\n")
        self.target("ip", "-batch", "-", input="\n".join(theirs) + "\n")
        self.target("sysctl", "-q", "-w", *(f"{k}={v}" for k, v in self.sysctls.items()))
        self.nft(self._ruleset())
        if self.bottleneck_pps is not None and self.shaper == "tbf":
            self._shape()
        if self.tcp or self.udp:
            proc = self.responder = self.spawn(
                [sys.executable, "-c", _RESPONDER, ",".join(map(str, self.tcp)),
                 ",".join(map(str, self.udp)), "1" if self.prefix6 else "0", str(BACKLOG),
                 str(HOLD_S)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError("the responder's listeners did not start (a port in use?)")
        if self.prefix6 is not None:
            wait_v6_ready(self.ours)

    def _shape(self) -> None:
        assert self.bottleneck_pps is not None
        rate = round(self.bottleneck_pps * SYN_FRAME4)  # bytes/s
        # The bucket holds ~1 ms of probes but at least one full frame (tbf drops what
        # cannot fit its bucket); the queue behind it queue_ms of traffic, then drops.
        burst = max(_MTU_FRAME + SYN_FRAME4, rate // 1000)
        limit = max(burst, round(rate * self.queue_ms / 1000))
        # INGRESS SHAPING: everything that arrives from the scanner goes through the ifb's
        # tbf before the responder's stack sees it (see the module docstring for why here).
        self.target("ip", "-batch", "-", input=(
            f"link add {SHAPER} type ifb\nlink set {SHAPER} up\n"))
        self.target("tc", "-batch", "-", input=(
            f"qdisc add dev {SHAPER} root tbf rate {rate * 8}bit burst {burst} limit {limit}\n"
            f"qdisc add dev {self.theirs} handle ffff: ingress\n"
            f"filter add dev {self.theirs} parent ffff: protocol all u32 match u32 0 0 "
            f"action mirred egress redirect dev {SHAPER}\n"))

    def _ruleset(self) -> str:
        sets, rules = [], []
        for fam, typ in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            elems = [str(n) for n in self.dropped if n.version == fam]
            body = f"    type {typ}; flags interval;\n"
            if elems:
                body += "    elements = { " + ", ".join(elems) + " }\n"
            sets.append(f"  set drop{fam} {{\n{body}  }}\n")
            rules.append(f"    {'ip' if fam == 4 else 'ip6'} daddr @drop{fam} "
                         "counter name \"dropped\" drop\n")
        link = []
        if self.bottleneck_pps is not None and self.shaper == "police":
            # POLICER: the link comes before the hosts, so it drops first; its burst is
            # queue_ms of the rate (at least a few packets).
            pps = round(self.bottleneck_pps)
            burst = max(4, round(pps * self.queue_ms / 1000))
            link = [f"    iifname \"{self.theirs}\" counter name \"link_in\" limit rate over "
                    f"{pps}/second burst {burst} packets counter name \"policed\" drop\n"]
        # Stateless rules at priority raw: no conntrack entry for millions of probes.
        return (f"table inet {_TABLE} {{\n"
                "  counter syn_in {}\n  counter synack_out {}\n  counter rst_out {}\n"
                "  counter dropped {}\n  counter link_in {}\n  counter policed {}\n"
                + "".join(sets) +
                "  chain pre {\n    type filter hook prerouting priority raw; policy accept;\n"
                + "".join(link) + "".join(rules) +
                "    tcp flags & (syn | ack) == syn counter name \"syn_in\"\n  }\n"
                "  chain out {\n    type filter hook output priority raw; policy accept;\n"
                "    tcp flags & (syn | ack) == syn | ack counter name \"synack_out\"\n"
                "    tcp flags & rst == rst counter name \"rst_out\"\n  }\n}\n")
