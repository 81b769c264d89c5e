"""A two-namespace lab for SYN scan tests: the suite's namespace is the scanner, a child
namespace (``unshare --net``) is the target, joined by a veth pair.

Addresses are documentation ranges only: scanner 198.51.100.1 / 2001:db8::1, target
198.51.100.2 / 2001:db8::2. Nothing is routed anywhere else, and the target namespace
dies with its holder process. The target side gets listeners (a child Python process)
and nftables rules (drop, ICMP reject, random loss, duplication) from the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from types import TracebackType

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
        self.holder: subprocess.Popen[str] | None = None
        self.listener: subprocess.Popen[str] | None = None

    def target(self, *cmd: str, input: str | None = None) -> None:
        """Run ``cmd`` inside the target namespace."""
        assert self.holder is not None
        run("nsenter", "-t", str(self.holder.pid), "-n", *cmd, input=input)

    def nft(self, ruleset: str) -> None:
        self.target("nft", "-f", "-", input=ruleset)

    def __enter__(self) -> VethLab:
        self.holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "600"], text=True)
        try:
            self._wire()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wire(self) -> None:
        assert self.holder is not None
        pid = str(self.holder.pid)
        for _ in range(100):  # the holder must have unshared before its netns is used
            if os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.01)
        run("ip", "link", "add", self.ours, "type", "veth", "peer", "name", self.theirs,
            "netns", pid)
        run("ip", "addr", "add", f"{SCANNER4}/24", "dev", self.ours)
        run("ip", "-6", "addr", "add", f"{SCANNER6}/64", "dev", self.ours, "nodad")
        run("ip", "link", "set", self.ours, "up")
        self.target("ip", "link", "set", "lo", "up")
        self.target("ip", "addr", "add", f"{TARGET4}/24", "dev", self.theirs)
        self.target("ip", "-6", "addr", "add", f"{TARGET6}/64", "dev", self.theirs, "nodad")
        self.target("ip", "link", "set", self.theirs, "up")
        self.listener = subprocess.Popen(
            ["nsenter", "-t", pid, "-n", sys.executable, "-c", _LISTENER, TARGET4, TARGET6,
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
        if self.listener is not None:
            self.listener.kill()
            self.listener.wait(5)
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(5)
        subprocess.run(["ip", "link", "del", self.ours], capture_output=True)


def _tcp_touch(host: str) -> None:
    """A connect() to a closed port: resolves the neighbour, then gets a reset."""
    import socket

    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect_ex((host, 9))
