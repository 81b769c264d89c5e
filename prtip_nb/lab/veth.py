"""A multi-host lab behind a veth pair: hosts that are up, down, on-link or routed.

The scanner is the *current* network namespace (it must be a private one: see
``scripts/in-netns``); the hosts live in a child namespace (``unshare --net``, held by a
process that ends with the lab: ``childns``) joined to it by a veth pair::

    scanner ns                               target ns
    pl<tag>a 198.51.100.1  <── veth ──>  pl<tag>b 198.51.100.2 (the gateway)
             2001:db8::1                          2001:db8::2
                                                  + every on-link host that is up
    routes: 203.0.113.0/24  via .2                lo: every routed host that is up
            2001:db8:1::/64 via ::2               blackhole routes for the rest

- **On-link hosts** (198.51.100.0/24, 2001:db8::/64) that are up are extra addresses on
  the target's veth, so they answer ARP / NDP; the rest of the prefix does not exist
  (down: no neighbour answer).
- **Routed hosts** (203.0.113.0/24, 2001:db8:1::/64) that are up are addresses on the
  target's ``lo``; the scanner reaches them through the gateway, so a scanner must use
  IP probes (ICMP echo, TCP), not ARP. The others hit a blackhole route: silence.
- ``nft(ruleset)`` firewalls the target namespace (per destination address if you like);
  ``spawn(argv)`` runs a process there (killed on exit); ``tcp=[ports]`` starts TCP
  listeners on every target address.

Only documentation ranges are used and nothing else is routed. Interface names carry a
per-lab tag, so labs in different scanner namespaces never clash; two labs in one scanner
namespace would claim the same addresses, and the second refuses to start.

>>> lab = VethLab(up=["198.51.100.10"], routed_up=["203.0.113.5"], tcp=[443])
>>> with lab:                                                        # doctest: +SKIP
...     lab.nft("table inet f {\n chain in {\n type filter hook input priority 0;\n"
...             " ip daddr 203.0.113.5 icmp type echo-request drop\n }\n}\n")
...     pn.discover(["198.51.100.0/28", "203.0.113.0/28"]).hosts
"""

from __future__ import annotations

import ipaddress
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

__all__ = [
    "GATEWAY4", "GATEWAY6", "ONLINK4", "ONLINK6", "ROUTED4", "ROUTED6", "SCANNER4",
    "SCANNER6", "VethLab", "host",
]

ONLINK4, ONLINK6 = "198.51.100.0/24", "2001:db8::/64"
ROUTED4, ROUTED6 = "203.0.113.0/24", "2001:db8:1::/64"
SCANNER4, SCANNER6 = "198.51.100.1", "2001:db8::1"
GATEWAY4, GATEWAY6 = "198.51.100.2", "2001:db8::2"

_ONLINK = [ipaddress.ip_network(ONLINK4), ipaddress.ip_network(ONLINK6)]
_ROUTED = [ipaddress.ip_network(ROUTED4), ipaddress.ip_network(ROUTED6)]

_LISTENER = textwrap.dedent(
    """
    import socket, sys
    socks = []
    for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for port in map(int, sys.argv[1].split(",")):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            s.listen(1024)
            socks.append(s)
    print("READY", flush=True)
    sys.stdin.read()
    """
)


def host(kind: str, n: int, family: int = 4) -> str:
    """Address number ``n`` of a lab prefix: ``host("routed", 5)`` is 203.0.113.5,
    ``host("onlink", 16, 6)`` is 2001:db8::10."""
    net = (_ONLINK if kind == "onlink" else _ROUTED)[family == 6]
    return str(net.network_address + n)




def _check(addrs: Iterable[str], nets: list[Any], what: str) -> list[str]:
    out = []
    for a in addrs:
        ip = ipaddress.ip_address(a)
        if not any(ip in net for net in nets):
            raise ValueError(f"{what} host {a} is outside {', '.join(map(str, nets))}")
        if str(ip) in (SCANNER4, SCANNER6):
            raise ValueError(f"{a} is the scanner's own address")
        out.append(str(ip))
    return out


class VethLab(ChildLab):
    """A target namespace of hosts behind a veth pair (see the module docstring).

    ``up``: on-link addresses that exist; ``routed_up``: routed addresses that exist;
    ``tcp``: ports with a listener on every target address. The gateway addresses
    (GATEWAY4/6) are always up. Use as a context manager; everything is removed on exit,
    errors included.
    """

    def __init__(self, up: Sequence[str] = (), routed_up: Sequence[str] = (), *,
                 tcp: Sequence[int] = (), tag: str | None = None) -> None:
        self.up = _check(up, _ONLINK, "on-link")
        self.routed_up = _check(routed_up, _ROUTED, "routed")
        self.tcp = list(tcp)
        tag = lab_tag(tag)
        self.ours, self.theirs = f"pl{tag}a", f"pl{tag}b"
        self.ns = ChildNetns(HOLD_S)

    # -- what a test reads ------------------------------------------------------------------
    @property
    def up_hosts(self) -> list[str]:
        """Every address that answers: the gateways, the on-link and the routed hosts."""
        return [GATEWAY4, GATEWAY6, *self.up, *self.routed_up]

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> VethLab:
        if not scanner_ns_private():
            raise PrivilegeError(
                "VethLab wires this network namespace to a lab: run it inside a private one "
                "(scripts/in-netns CMD, or sudo unshare --net sh -c 'ip link set lo up && CMD')"
            )
        try:
            self.ns.start()
            self._wire()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Kill what runs in the target, the namespace's holder, and the veth pair."""
        self.ns.close()
        # The peer went with the namespace; ours goes with it, but do not count on timing.
        subprocess.run(["ip", "link", "del", self.ours], capture_output=True)

    def _wire(self) -> None:
        try:
            self.ns.add_veth(self.ours, self.theirs)
            mine = [f"addr add {SCANNER4}/24 dev {self.ours}",
                    f"addr add {SCANNER6}/64 dev {self.ours} nodad",
                    f"link set {self.ours} up",
                    f"route add {ROUTED4} via {GATEWAY4} dev {self.ours}",
                    f"route add {ROUTED6} via {GATEWAY6} dev {self.ours}"]
            run("ip", "-batch", "-", input="\n".join(mine) + "\n")
        except RuntimeError as exc:
            if "exists" in str(exc):
                raise RuntimeError(
                    f"another lab already holds {ONLINK4} in this namespace: one VethLab "
                    f"per scanner namespace at a time ({exc})") from None
            raise
        theirs = ["link set lo up",
                  f"addr add {GATEWAY4}/24 dev {self.theirs}",
                  f"addr add {GATEWAY6}/64 dev {self.theirs} nodad",
                  *(f"addr add {a}/{32 if '.' in a else '128 nodad'} dev {self.theirs}"
                    for a in self.up),
                  *(f"addr add {a}/{32 if '.' in a else 128} dev lo" for a in self.routed_up),
                  # Absent routed hosts: dropped without an ICMP error, like a silent host.
                  f"route add blackhole {ROUTED4}", f"route add blackhole {ROUTED6}",
                  f"link set {self.theirs} up"]
        self.target("ip", "-batch", "-", input="\n".join(theirs) + "\n")
        if self.tcp:
            proc = self.spawn([sys.executable, "-c", _LISTENER, ",".join(map(str, self.tcp))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError("the target's listeners did not start")
        wait_v6_ready(self.ours)
