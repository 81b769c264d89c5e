"""A routed lab for traceroute: four router namespaces in a chain, then the targets.

::

    scanner ns ── R1 ── R2 ── R3 ── R4 ── target ns
    198.18.0.1   .0.2  .1.2  .2.2  .3.2   198.18.4.2, and TARGETS4 on its lo
    2001:db8:1800:0::1 ...                2001:db8:1800:4::2, and TARGETS6 on its lo

Link ``i`` (0..4) is 198.18.i.0/24 and 2001:db8:1800:i::/64; its upstream end is ``.1``
(``::1``), its downstream end ``.2`` (``::2``). A router answers with its upstream address
(the one facing the scanner), as Linux does for ICMP time exceeded. Every target shares the
whole path, so a traceroute of two of them shares the four router hops.

- ``silent``: routers (1..4) that send no ICMP time exceeded (an nftables rule drops it on
  the way out), as many firewalled routers do: a hop with no address.
- ICMP rate limits are off on the routers (``icmp_ratelimit=0``): Linux's default of one
  error a second per peer (burst 6) would make a 50-host trace a test of the rate limit.
- ``tcp``: ports with a listener on every target address (for a traceroute by SYN).
- ``names``: optional PTR names for router addresses, served by nothing here (the
  traceroute test runs with -n or a DnsLab).

The scanner gets one route, 198.18.0.0/15 (and 2001:db8:1800::/48) via R1: no default
route, nothing leaves the lab.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Sequence
from types import TracebackType

from prtip_nb.errors import PrivilegeError
from prtip_nb.lab.childns import ChildNetns, lab_tag, run, scanner_ns_private, wait_v6_ready
from prtip_nb.lab.veth import _LISTENER

__all__ = ["HOPS", "RouteLab", "hop_address", "target4", "target6"]

HOPS = 4
NET4, NET6 = "198.18.0.0/15", "2001:db8:1800::/48"


def link4(i: int, end: int) -> str:
    return f"198.18.{i}.{end}"


def link6(i: int, end: int) -> str:
    return str(ipaddress.ip_address(f"2001:db8:1800:{i:x}::{end}"))  # canonical text


def hop_address(n: int, family: int = 4) -> str:
    """The address router ``n`` (1..HOPS) answers from: its end of link n-1."""
    return link4(n - 1, 2) if family == 4 else link6(n - 1, 2)


def target4(n: int) -> str:
    """Target host ``n`` (1..250): 198.19.0.n on the target's lo."""
    return f"198.19.0.{n}"


def target6(n: int) -> str:
    return str(ipaddress.ip_address(f"2001:db8:1800:100::{n:x}"))


class RouteLab:
    """Routers R1..R4 and a target namespace; see the module docstring."""

    def __init__(self, targets: int = 2, *, silent: Sequence[int] = (3,),
                 tcp: Sequence[int] = (80,), tag: str | None = None) -> None:
        if not 1 <= targets <= 250:
            raise ValueError("targets must be 1..250")
        self.n_targets = targets
        self.silent = sorted(set(silent))
        if any(not 1 <= r <= HOPS for r in self.silent):
            raise ValueError(f"silent routers are numbered 1..{HOPS}")
        self.tcp = list(tcp)
        self.tag = lab_tag(tag)
        self.routers = [ChildNetns() for _ in range(HOPS)]
        self.target_ns = ChildNetns()
        self._ours = f"pr{self.tag}0"

    @property
    def targets4(self) -> list[str]:
        return [target4(n) for n in range(1, self.n_targets + 1)]

    @property
    def targets6(self) -> list[str]:
        return [target6(n) for n in range(1, self.n_targets + 1)]

    def expected_hops(self, family: int = 4) -> list[str | None]:
        """The hop addresses a traceroute should list, TTL 1 to the target (excluded):
        None for a silent router."""
        return [None if n in self.silent else hop_address(n, family)
                for n in range(1, HOPS + 1)]

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> RouteLab:
        if not scanner_ns_private():
            raise PrivilegeError(
                "RouteLab wires this network namespace to a lab: run it inside a private one "
                "(scripts/in-netns CMD)")
        try:
            for ns in [*self.routers, self.target_ns]:
                ns.start()
            self._wire()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for ns in [*self.routers, self.target_ns]:
            ns.close()
        subprocess.run(["ip", "link", "del", self._ours], capture_output=True)

    # -- wiring ---------------------------------------------------------------------------------
    def _pair(self, i: int) -> tuple[str, str]:
        return f"pr{self.tag}{i}u", f"pr{self.tag}{i}d"

    def _wire(self) -> None:
        chain = [*self.routers, self.target_ns]  # chain[i] is the downstream end of link i
        # Link 0: ours in the scanner namespace, its peer in R1.
        chain[0].add_veth(self._ours, self._pair(0)[1])
        for i in range(1, HOPS + 1):  # link i: R_i (upstream end) -- chain[i] (downstream)
            up, down = self._pair(i)
            run("ip", "link", "add", up, "type", "veth", "peer", "name", down)
            self.routers[i - 1].adopt(up)
            chain[i].adopt(down)
        mine = [f"addr add {link4(0, 1)}/24 dev {self._ours}",
                f"addr add {link6(0, 1)}/64 dev {self._ours} nodad",
                f"link set {self._ours} up",
                f"route add {NET4} via {link4(0, 2)} dev {self._ours}",
                f"route add {NET6} via {link6(0, 2)} dev {self._ours}"]
        run("ip", "-batch", "-", input="\n".join(mine) + "\n")
        for r in range(1, HOPS + 1):
            self._router(r)
        self._target()
        wait_v6_ready(self._ours)

    def _router(self, r: int) -> None:
        ns = self.routers[r - 1]
        down_dev = self._pair(r - 1)[1] if r > 1 else self._pair(0)[1]
        up_dev = self._pair(r)[0]
        cmds = ["link set lo up",
                f"addr add {link4(r - 1, 2)}/24 dev {down_dev}",
                f"addr add {link6(r - 1, 2)}/64 dev {down_dev} nodad",
                f"addr add {link4(r, 1)}/24 dev {up_dev}",
                f"addr add {link6(r, 1)}/64 dev {up_dev} nodad",
                f"link set {down_dev} up", f"link set {up_dev} up",
                # Onward: everything of the lab beyond this router; back: links before it.
                f"route add 198.19.0.0/24 via {link4(r, 2)}",
                f"route add 2001:db8:1800:100::/64 via {link6(r, 2)}"]
        cmds += [f"route add 198.18.{j}.0/24 via {link4(r, 2)}" for j in range(r + 1, HOPS + 1)]
        cmds += [f"route add 2001:db8:1800:{j:x}::/64 via {link6(r, 2)}"
                 for j in range(r + 1, HOPS + 1)]
        cmds += [f"route add 198.18.{j}.0/24 via {link4(r - 1, 1)}" for j in range(0, r - 1)]
        cmds += [f"route add 2001:db8:1800:{j:x}::/64 via {link6(r - 1, 1)}"
                 for j in range(0, r - 1)]
        ns.run("ip", "-batch", "-", input="\n".join(cmds) + "\n")
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                    "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"):
            ns.run("sysctl", "-qw", key)
        if r in self.silent:
            ns.run("nft", "-f", "-", input=(
                "table inet silent {\n  chain out {\n    type filter hook output priority 0;\n"
                "    icmp type time-exceeded drop\n    icmpv6 type time-exceeded drop\n"
                "  }\n}\n"))

    def _target(self) -> None:
        ns = self.target_ns
        dev = self._pair(HOPS)[1]
        cmds = ["link set lo up",
                f"addr add {link4(HOPS, 2)}/24 dev {dev}",
                f"addr add {link6(HOPS, 2)}/64 dev {dev} nodad",
                f"link set {dev} up",
                f"route add {NET4} via {link4(HOPS, 1)}",
                f"route add {NET6} via {link6(HOPS, 1)}"]
        cmds += [f"addr add {a}/32 dev lo" for a in self.targets4]
        cmds += [f"addr add {a}/128 dev lo" for a in self.targets6]
        ns.run("ip", "-batch", "-", input="\n".join(cmds) + "\n")
        if self.tcp:
            proc = ns.spawn([sys.executable, "-c", _LISTENER, ",".join(map(str, self.tcp))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError("the target's listeners did not start")
