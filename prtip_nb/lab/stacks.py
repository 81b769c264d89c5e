"""A lab of hosts with different TCP/IP stacks, each in its own namespace (for -O).

OS detection tells stacks apart; one namespace is one Linux stack, so every host here gets
its own namespace and veth pair, with its own sysctls and firewall::

    scanner ns                                        host i's ns
    br<tag> 198.18.0.1/24 ── pl<tag>i <── veth ──>  pl<tag>ib 198.18.0.<10+i>/24
    (a bridge: every host on one link,            net.ipv4.* as given, nft rules as
     as nmap groups hosts by interface)           given, TCP listeners on ``tcp`` ports

``StackHost(sysctls={"net.ipv4.tcp_timestamps": "0"}, nft="...")`` describes one host;
hosts are on-link (one hop), like nmap's directly connected targets. Only 198.18.0.0/15
(benchmarking addresses) is used.

>>> hosts = [StackHost(), StackHost(sysctls={"net.ipv4.ip_default_ttl": "128"})]
>>> with StackLab(hosts, tcp=[22]) as lab:                          # doctest: +SKIP
...     lab.addresses        # ['198.18.0.10', '198.18.0.11']
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from prtip_nb.errors import PrivilegeError
from prtip_nb.lab.childns import HOLD_S, ChildNetns, lab_tag, run, scanner_ns_private

__all__ = ["DROP_ICMP", "DROP_UDP", "StackHost", "StackLab"]

#: nft rulesets for hosts that drop ICMP echo requests, or every UDP datagram.
DROP_ICMP = ("table inet f {\n chain in {\n type filter hook input priority 0;\n"
             " icmp type echo-request drop\n }\n}\n")
DROP_UDP = ("table inet f {\n chain in {\n type filter hook input priority 0;\n"
            " meta l4proto udp drop\n }\n}\n")

_LISTENER = r"""
import socket, sys, time
socks = []
for port in map(int, sys.argv[1].split(",")):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64); socks.append(s)
print("READY", flush=True)
sys.stdin.read()
"""


@dataclass(frozen=True)
class StackHost:
    """One lab host: sysctls (``net.ipv4.*`` names), an nft ruleset, a label."""

    sysctls: Mapping[str, str] = field(default_factory=dict)
    nft: str | None = None
    label: str = ""


class StackLab:
    """Hosts (``StackHost``) in namespaces of their own, each one hop from the scanner."""

    def __init__(self, hosts: Sequence[StackHost], *, tcp: Sequence[int] = (22,),
                 tag: str | None = None) -> None:
        if not 1 <= len(hosts) <= 250:
            raise ValueError(f"a StackLab holds 1 to 250 hosts, not {len(hosts)}")
        self.hosts = list(hosts)
        self.tcp = list(tcp)
        self.tag = lab_tag(tag)[:7]
        self.addresses = [f"198.18.0.{10 + i}" for i in range(len(hosts))]
        self.bridge = f"br{self.tag}"
        self._ns: list[ChildNetns] = []
        self._links: list[str] = []

    def __enter__(self) -> StackLab:
        if not scanner_ns_private():
            raise PrivilegeError("StackLab wires this network namespace to its hosts: run it "
                                 "inside a private one (scripts/in-netns CMD)")
        try:
            self._links.append(self.bridge)
            run("ip", "-batch", "-", input=f"link add {self.bridge} type bridge\n"
                                          f"addr add 198.18.0.1/24 dev {self.bridge}\n"
                                          f"link set {self.bridge} up\n")
            for i, h in enumerate(self.hosts):
                self._add(i, h)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def target(self, i: int, *cmd: str, input: str | None = None) -> str:
        """Run ``cmd`` in host ``i``'s namespace; its stdout."""
        return self._ns[i].run(*cmd, input=input)

    def spawn(self, i: int, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in host ``i``'s namespace (a service of that host, e.g.
        ``python -m http.server 8080 --bind <address>``); it is killed when the lab closes."""
        return self._ns[i].spawn(argv, **popen)

    def _add(self, i: int, h: StackHost) -> None:
        ns = ChildNetns(HOLD_S).start()
        self._ns.append(ns)
        ours, theirs = f"pl{self.tag}{i}", f"pl{self.tag}{i}b"
        ns.add_veth(ours, theirs)
        self._links.append(ours)
        run("ip", "-batch", "-", input=f"link set {ours} master {self.bridge}\n"
                                      f"link set {ours} up\n")
        ns.run("ip", "-batch", "-", input=f"link set lo up\naddr add {self.addresses[i]}/24 "
                                         f"dev {theirs}\nlink set {theirs} up\n")
        for key, val in h.sysctls.items():
            if not key.startswith("net."):
                raise ValueError(f"sysctl {key!r}: only net.* settings are per namespace")
            ns.run("sysctl", "-q", "-w", f"{key}={val}")
        if h.nft:
            ns.run("nft", "-f", "-", input=h.nft)
        if self.tcp:
            proc = ns.spawn([sys.executable, "-c", _LISTENER, ",".join(map(str, self.tcp))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError(f"host {i}'s listeners did not start")

    def close(self) -> None:
        for ns in self._ns:
            ns.close()
        self._ns = []
        for link in reversed(self._links):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        self._links = []
