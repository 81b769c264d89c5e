"""A veth lab for UDP scan tests: tests.net.vethlab's two namespaces, plus UDP services
in the target (a UDP echo, an NTP-like responder, a bound socket that never answers,
and dnsmasq when installed) and a knob for the target's ICMP rate-limit sysctls.

The sysctls are per network namespace, so setting them in the target touches nothing
outside the lab. ``TwoTargets`` is two target namespaces (two kernels, two ICMP limits);
``udp_service`` answers UDP on loopback in the suite's own namespace.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prtip_nb.lab.childns import ChildNetns
from tests.net.vethlab import TARGET4, TARGET6, VethLab

ECHO = [7, 1000]  # echo the datagram back
NTP = 123  # answer a 48-byte NTP client request (mode 3), ignore anything else
SILENT = 1001  # a bound socket that reads and never answers: open|filtered for everyone
DNS = 53  # dnsmasq

_SERVICES = textwrap.dedent(
    """
    import selectors, socket, sys
    echo, ntp, silent = (list(map(int, a.split(","))) for a in sys.argv[3:6])
    sel = selectors.DefaultSelector()
    for host, fam in ((sys.argv[1], socket.AF_INET), (sys.argv[2], socket.AF_INET6)):
        for port in echo + ntp + silent:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.bind((host, port))
            sel.register(s, selectors.EVENT_READ, port)
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            s, port = key.fileobj, key.data
            data, addr = s.recvfrom(4096)
            if port in echo:
                s.sendto(data or b"\\n", addr)
            elif port in ntp and len(data) >= 48 and data[0] & 7 == 3:
                s.sendto(bytes([0x24, 2, data[2], 0xEC]) + bytes(20) + data[40:48]
                         + bytes(16), addr)
    """
)

# Ratelimit sysctls of the target namespace: (IPv4 path, IPv6 path) under /proc/sys/net.
RATEMASKS = ("ipv4/icmp_ratemask", "ipv6/icmp/ratemask")
RATELIMITS = ("ipv4/icmp_ratelimit", "ipv6/icmp/ratelimit")


class UdpLab(VethLab):
    """``with UdpLab() as lab: lab.nft(rules); lab.sysctl("ipv4/icmp_ratemask", "0")``."""

    def __init__(self, tag: str = "u", dns: bool = True) -> None:
        super().__init__(open_ports=[22], tag=tag)
        self.dns = dns and shutil.which("dnsmasq") is not None
        self._tmp = tempfile.TemporaryDirectory(prefix="prtip-udplab-")

    def sysctl(self, path: str, value: str) -> None:
        """Write /proc/sys/net/``path`` in the target namespace."""
        self.target("sh", "-c", f"echo '{value}' > /proc/sys/net/{path}")

    def read_sysctl(self, path: str) -> str:
        return self.target("cat", f"/proc/sys/net/{path}").strip()

    def unlimited(self) -> None:
        """No ICMP error rate limit in the target (ratemask empty: no type is limited)."""
        self.sysctl(RATEMASKS[0], "0")
        self.sysctl(RATEMASKS[1], "")

    def _wire(self) -> None:
        super()._wire()
        svc = self.spawn(
            [sys.executable, "-c", _SERVICES, TARGET4, TARGET6,
             ",".join(map(str, ECHO)), str(NTP), str(SILENT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert svc.stdout is not None
        if svc.stdout.readline().strip() != "READY":
            raise RuntimeError("the target's UDP services did not start")
        if self.dns:
            tmp = self._tmp.name
            self.spawn(
                ["dnsmasq", "--keep-in-foreground", "--port=53",
                 f"--listen-address={TARGET4}", f"--listen-address={TARGET6}",
                 "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                 "--address=/lab.test/198.51.100.2", f"--pid-file={tmp}/dnsmasq.pid",
                 "--user=root", "--group=root"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            )
            _wait_dns(TARGET4)

    def __exit__(self, *exc: object) -> None:  # type: ignore[override]
        super().__exit__(None, None, None)  # kills the services with the namespace
        self._tmp.cleanup()


def _wait_dns(host: str) -> None:
    """Until dnsmasq answers a query (it binds a moment after it starts)."""
    import socket
    import time

    q = bytes.fromhex("70720100000100000000000004746573740000010001")
    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while time.monotonic() < deadline:
            s.sendto(q, (host, 53))
            try:
                s.recv(512)
                return
            except OSError:
                continue
    raise RuntimeError("dnsmasq did not answer in the lab")


def nmap_udp(nmap: str, host: str, ports: str, *extra: str,
             timeout: float = 300) -> dict[int, tuple[str, str]]:
    """{port: (state, reason)} for every port of ``ports``, as ``nmap -sU`` sees them."""
    import xml.etree.ElementTree as ET

    from prtip_nb.targets import parse_ports

    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        cmd = [nmap, "-sU", "-n", "-Pn", "--reason", "-p", ports, "-oX", out.name, *extra,
               *(["-6"] if ":" in host else []), host]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr
        root = ET.parse(out.name).getroot()
    got: dict[int, tuple[str, str]] = {}
    rest: list[tuple[str, str]] = []
    for port in root.iter("port"):
        st = port.find("state")
        assert st is not None
        got[int(port.get("portid", "0"))] = (st.get("state", ""), st.get("reason", ""))
    for e in root.iter("extraports"):
        for r in e.iter("extrareasons"):
            if r.get("ports"):  # nmap >= 7.9x names the folded ports
                for _proto, port in parse_ports(r.get("ports"), default_proto="udp"):
                    got[port] = (e.get("state", ""), r.get("reason", ""))
            else:
                rest.append((e.get("state", ""), r.get("reason", "")))
    assert len(set(rest)) <= 1, f"nmap folded several states: {rest}"
    for _proto, port in parse_ports(ports, default_proto="udp"):
        if port not in got:
            assert rest, f"nmap reported nothing for port {port}"
            got[port] = rest[0]
    return got


class TwoTargets:
    """Two target namespaces, each behind its own veth pair, each with its own kernel and
    so its own ICMP rate limit towards us: 198.51.100.2 (``A``) and 203.0.113.2 (``B``).

    Linux keeps the ICMP error bucket per destination peer (our address), per namespace:
    addresses of ONE namespace share one bucket; two hosts that each limit us need two
    namespaces. No services: every UDP port is closed unless ``nft`` drops it.
    """

    A, B = "198.51.100.2", "203.0.113.2"
    _NETS = (("198.51.100.1", A), ("203.0.113.1", B))

    def __init__(self, tag: str = "w") -> None:
        self.tag = tag
        self.spaces: list[ChildNetns] = []
        self.links: list[str] = []

    def target(self, i: int, *cmd: str, input: str | None = None) -> None:
        self.spaces[i].run(*cmd, input=input)

    def sysctl(self, i: int, path: str, value: str) -> None:
        self.target(i, "sh", "-c", f"echo '{value}' > /proc/sys/net/{path}")

    def nft(self, i: int, ruleset: str) -> None:
        self.target(i, "nft", "-f", "-", input=ruleset)

    def __enter__(self) -> TwoTargets:
        from tests.net.vethlab import run

        try:
            for i, (ours, theirs) in enumerate(self._NETS):
                ns = ChildNetns()
                self.spaces.append(ns)
                ns.start()
                a, b = f"pv{self.tag}{i}0", f"pv{self.tag}{i}1"
                ns.add_veth(a, b)
                self.links.append(a)
                run("ip", "addr", "add", f"{ours}/24", "dev", a)
                run("ip", "link", "set", a, "up")
                self.target(i, "ip", "link", "set", "lo", "up")
                self.target(i, "ip", "addr", "add", f"{theirs}/24", "dev", b)
                self.target(i, "ip", "link", "set", b, "up")
                _wait_arp(theirs)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in self.spaces:
            ns.close()
        for a in self.links:
            subprocess.run(["ip", "link", "del", a], capture_output=True)


def _wait_arp(host: str) -> None:
    """One datagram to a closed port: resolves the neighbour before the scan starts (its
    ICMP error spends one token of the target's burst, refilled before the scan)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"", (host, 9))


@contextmanager
def udp_service(host: str, ports: list[int], *, copies: int = 1,
                only: bytes | None = None) -> Iterator[list[bytes]]:
    """UDP sockets on ``ports`` that answer each datagram ``copies`` times (only those
    starting with ``only``, if given); yields the datagrams received."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    for p in ports:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((host, p))
        s.settimeout(0.05)
        socks.append(s)
    got: list[bytes] = []
    stop = threading.Event()

    def serve(s: socket.socket) -> None:
        while not stop.is_set():
            try:
                data, addr = s.recvfrom(4096)
            except TimeoutError:
                continue
            got.append(data)
            if only is None or data.startswith(only):
                for _ in range(copies):
                    s.sendto(b"ok" + data[:8], addr)

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in socks]
    for t in threads:
        t.start()
    try:
        yield got
    finally:
        stop.set()
        for t in threads:
            t.join()
        for s in socks:
            s.close()
