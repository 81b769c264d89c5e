"""A child network namespace for the veth labs: made, entered and torn down safely.

Both labs (``veth.VethLab``, ``rangelab.RangeLab``) put their hosts in a namespace made by
``unshare --net`` and held by ``timeout HOLD_S cat`` reading a pipe from the lab: when the
lab closes, crashes or is killed, the pipe closes, the holder exits, and once the lab's own
processes in it have gone too (RangeLab's responder also ends at EOF) the namespace and
its veth pair go away; ``HOLD_S`` bounds the holder in any case. Commands enter it
through a *file descriptor* of that namespace (``nsenter --net=/proc/self/fd/N``), never
through the holder's pid: a pid names whatever process holds it now, and entering the
wrong one would run a lab's ``ip``/``nft`` commands in the host's namespace. The
descriptor is opened once, checked to be a namespace other than ours, and names that
namespace for as long as it is open.

- ``ChildNetns``: the holder, ``run`` and ``spawn`` inside it, ``close``.
- ``run(*cmd)``: run a command here (stdout, or RuntimeError with its stderr).
- ``scanner_ns_private()``: is the current namespace a private one a lab may rewire?
- ``wait_v6_ready(dev)``: until IPv6 on ``dev`` is usable.
- ``lab_tag()``: a per-process, per-lab tag for interface names.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["HOLD_S", "ChildLab", "ChildNetns", "lab_tag", "run", "scanner_ns_private",
           "wait_listening", "wait_v6_ready"]

HOLD_S = 1800  # the holder's lifetime: a lab outlives no crashed test by more than this
_SEQ = itertools.count()


def run(*cmd: str, input: str | None = None, pass_fds: Sequence[int] = ()) -> str:
    """Run ``cmd``; its stdout, or RuntimeError with its stderr."""
    done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=30,
                          pass_fds=pass_fds)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


def scanner_ns_private() -> bool:
    """True in a private namespace: scripts/in-netns's flag, or only lo and lab veths."""
    if os.environ.get("PRTIP_NB_NETNS") == "1":
        return True
    names = [name for _i, name in socket.if_nameindex()]
    return all(n == "lo" or n.startswith(("pl", "pv", "pr")) for n in names)


def wait_listening(address: str, port: int, timeout: float = 10.0) -> None:
    """Until a TCP connect to ``address:port`` succeeds (a lab server has started);
    RuntimeError after ``timeout`` seconds (bounded: about 100 tries)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {address}:{port} after {timeout} s")


def wait_v6_ready(dev: str) -> None:
    """Wait (≤ 2 s) until ``dev`` has no tentative address: IPv6 routes through a
    gateway work once our link-local address is usable."""
    for _ in range(200):
        if "tentative" not in run("ip", "-6", "addr", "show", "dev", dev):
            return
        time.sleep(0.01)


def lab_tag(tag: str | None = None) -> str:
    """``tag`` checked, or a fresh one: interface names are ``pl<tag>a`` / ``pl<tag>b``."""
    tag = tag if tag is not None else f"{os.getpid() % 0xFFFF:x}{next(_SEQ)}"
    if len(tag) > 11:
        raise ValueError(f"tag {tag!r} is too long for an interface name (11 at most)")
    return tag


class ChildNetns:
    """A network namespace held by ``timeout HOLD_S cat`` and entered through a descriptor.

    ``start()`` makes it; ``run``/``spawn`` act inside it; ``close()`` kills what was
    spawned and the holder, and closes the descriptor (the namespace goes with its last
    user). ``close`` is idempotent.
    """

    def __init__(self, hold_s: int = HOLD_S) -> None:
        self.hold_s = hold_s
        self.holder: subprocess.Popen[str] | None = None
        self._fd: int | None = None
        self._spawned: list[subprocess.Popen[Any]] = []

    @property
    def pid(self) -> int:
        """The holder's pid (for display; enter the namespace with ``run``/``spawn``)."""
        if self.holder is None:
            raise RuntimeError("the lab is not running; use it as a context manager")
        return self.holder.pid

    def start(self) -> ChildNetns:
        # The holder reads our pipe: it ends at EOF, i.e. when we close it or die.
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", "timeout", str(self.hold_s), "cat"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        mine = os.stat("/proc/self/ns/net")
        # NAMESPACE BY DESCRIPTOR: the holder is our child and not yet reaped, so its pid
        # cannot be reused while we open its namespace; once open, the fd is the namespace.
        for _ in range(400):
            if self.holder.poll() is not None:
                break
            try:
                fd = os.open(f"/proc/{self.holder.pid}/ns/net", os.O_RDONLY)
            except FileNotFoundError:
                break
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
                self._fd = fd
                return self
            os.close(fd)  # not unshared yet
            time.sleep(0.005)
        self.close()
        raise RuntimeError("the lab's namespace holder did not unshare (is unshare there, "
                           "and are we root or CAP_SYS_ADMIN?)")

    def _enter(self) -> tuple[list[str], tuple[int]]:
        if self._fd is None:
            raise RuntimeError("the lab is not running; use it as a context manager")
        return ["nsenter", f"--net=/proc/self/fd/{self._fd}"], (self._fd,)

    def add_veth(self, ours: str, theirs: str) -> None:
        """A veth pair: ``ours`` here, its peer ``theirs`` inside the namespace (named by
        the descriptor too: iproute2 takes a path for ``netns``)."""
        _prefix, fds = self._enter()
        run("ip", "link", "add", ours, "type", "veth", "peer", "name", theirs,
            "netns", f"/proc/self/fd/{fds[0]}", pass_fds=fds)

    def adopt(self, dev: str) -> None:
        """Move interface ``dev`` from the current namespace into this one (a veth end of a
        pair between two lab namespaces: made here, then each end moved)."""
        _prefix, fds = self._enter()
        run("ip", "link", "set", dev, "netns", f"/proc/self/fd/{fds[0]}", pass_fds=fds)

    def run(self, *cmd: str, input: str | None = None) -> str:
        """Run ``cmd`` inside the namespace; its stdout (RuntimeError on failure)."""
        prefix, fds = self._enter()
        return run(*prefix, *cmd, input=input, pass_fds=fds)

    def spawn(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace; it is killed by ``close``."""
        prefix, fds = self._enter()
        proc = subprocess.Popen([*prefix, *argv], pass_fds=fds, **popen)
        self._spawned.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._spawned:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._spawned = []
        if self.holder is not None:
            if self.holder.stdin is not None:
                self.holder.stdin.close()  # cat sees EOF even if timeout is killed first
            if self.holder.poll() is None:
                self.holder.kill()
            self.holder.wait(5)
            self.holder = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ChildLab:
    """What every lab offers in its child namespace (``self.ns``): run, firewall, spawn."""

    ns: ChildNetns

    @property
    def pid(self) -> int:
        """The namespace holder's pid (for display: ``target``/``spawn`` enter the namespace
        by a descriptor, never by this pid)."""
        return self.ns.pid

    def target(self, *cmd: str, input: str | None = None) -> str:
        """Run ``cmd`` inside the lab's namespace; its stdout."""
        return self.ns.run(*cmd, input=input)

    def nft(self, ruleset: str) -> None:
        """Load an nftables ruleset (``nft -f -`` syntax) in the lab's namespace."""
        self.target("nft", "-f", "-", input=ruleset)

    def spawn(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the lab's namespace; it is killed when the lab ends."""
        return self.ns.spawn(argv, **popen)
