"""A two-namespace lab for SYN scan tests: the suite's namespace is the scanner, a child
namespace (``unshare --net``) is the target, joined by a veth pair.

Addresses are documentation ranges only: scanner 198.51.100.1 / 2001:db8::1, target
198.51.100.2 / 2001:db8::2. Nothing is routed anywhere else, and the target namespace
dies with its holder process. The namespace is entered by a descriptor
(prtip_nb.lab.childns.ChildNetns), never by the holder's pid. The target side gets
listeners (a child Python process) and nftables rules (drop, ICMP reject, random loss,
duplication) from the test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import TracebackType

from prtip_nb.lab.childns import ChildNetns

SCANNER4, TARGET4 = "198.51.100.1", "198.51.100.2"
SCANNER6, TARGET6 = "2001:db8::1", "2001:db8::2"

_LISTENER = textwrap.dedent(
    """
    import socket, sys
    socks = []
    for host, fam in ((sys.argv[1], socket.AF_INET), (sys.argv[2], socket.AF_INET6)):
        for port in map(int, sys.argv[3].split(",")):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(1024)
            socks.append(s)
    print("READY", flush=True)
    sys.stdin.read()
    """
)


def run(*cmd: str, input: str | None = None) -> None:
    done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")


class VethLab:
    """``with VethLab(open_ports=[22, 80]) as lab: lab.nft(rules)``."""

    def __init__(self, open_ports: list[int], tag: str = "s") -> None:
        self.open_ports = open_ports
        self.ours, self.theirs = f"pv{tag}0", f"pv{tag}1"
        self.ns = ChildNetns()
        self.listener: subprocess.Popen[str] | None = None

    def target(self, *cmd: str, input: str | None = None) -> str:
        """Run ``cmd`` inside the target namespace; its stdout."""
        return self.ns.run(*cmd, input=input)

    def spawn(self, argv: list[str], **popen: object) -> subprocess.Popen[str]:
        """Start ``argv`` inside the target namespace (killed when the lab ends)."""
        return self.ns.spawn(argv, **popen)

    def nft(self, ruleset: str) -> None:
        self.target("nft", "-f", "-", input=ruleset)

    def __enter__(self) -> VethLab:
        try:
            self.ns.start()
            self._wire()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wire(self) -> None:
        self.ns.add_veth(self.ours, self.theirs)
        run("ip", "addr", "add", f"{SCANNER4}/24", "dev", self.ours)
        run("ip", "-6", "addr", "add", f"{SCANNER6}/64", "dev", self.ours, "nodad")
        run("ip", "link", "set", self.ours, "up")
        self.target("ip", "link", "set", "lo", "up")
        self.target("ip", "addr", "add", f"{TARGET4}/24", "dev", self.theirs)
        self.target("ip", "-6", "addr", "add", f"{TARGET6}/64", "dev", self.theirs, "nodad")
        self.target("ip", "link", "set", self.theirs, "up")
        self.listener = self.spawn(
            [sys.executable, "-c", _LISTENER, TARGET4, TARGET6,
             ",".join(map(str, self.open_ports))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.listener.stdout is not None
        if self.listener.stdout.readline().strip() != "READY":
            raise RuntimeError("the target's listeners did not start")
        # Neighbour discovery first, so the first probes are not queued behind it.
        _tcp_touch(TARGET4)
        _tcp_touch(TARGET6)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.ns.close()  # kills the listener and whatever else was spawned
        subprocess.run(["ip", "link", "del", self.ours], capture_output=True)


def _tcp_touch(host: str) -> None:
    """A connect() to a closed port: resolves the neighbour, then gets a reset."""
    import socket

    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect_ex((host, 9))
