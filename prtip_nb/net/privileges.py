"""Root only while sockets open: a pool of raw and capture sockets opened up front, then
the process becomes the invoking user (``SUDO_UID``) or ``nobody``, with every capability
gone, before it reads a byte from the network or a file (issue 16).

WHY. A scanner parses what strangers send (TCP/ICMP headers, banners through regexes,
X.509 certificates) and files it is handed. Root is needed for exactly one thing: opening
``SOCK_RAW`` and ``AF_PACKET`` sockets (and deleting neighbour entries, below). A socket,
once open, keeps working after the process loses the right to open it, so the program
opens what its scan will need, drops, and then scans: a bug in any parser then runs as an
ordinary user with no capabilities, and ``no_new_privs`` keeps it from regaining any
through a setuid or file-capability program.

THE POOL. ``open_pool`` opens, as root:
- one ``IPPROTO_RAW`` sender per family; every ``RawSender`` gets a ``dup`` of it (one
  socket, one 4 MiB send buffer forced while root could);
- ``capture`` ``AF_PACKET`` sockets per family (one per raw stage), protocol 0: they
  capture nothing until ``Capture`` binds them, after its filter and ring are set
  (neither needs privileges); each capture takes a fresh one (a ring is set once);
- discovery's raw ICMP and TCP receive sockets, with a drop-everything filter until
  discovery attaches its own (a raw TCP socket otherwise copies every segment the host gets).
The engines ask the pool first (``take_raw``, ``take_packet``, ``take_discovery``) and open
their own sockets when there is no pool (the Python API, or a process that kept root).

NEIGHBOUR ENTRIES. Discovery deletes the neighbour entry of a silent on-link target so the
kernel asks ARP/NDP afresh; netlink checks CAP_NET_ADMIN of the *sender* at each request,
so an open socket is not enough. A helper process forked before the drop keeps root for
that one request: it reads fixed 21-byte records (family, interface index, address) from a
socket pair, answers with an errno, and exits when the pair closes. Nothing else reaches it.

WHO. ``SUDO_UID``/``SUDO_GID`` when set (the user who typed ``sudo``: the files the scan
writes are theirs, as without sudo), else ``nobody``. ``--privileged`` keeps root.
The Python API never drops on its own: a notebook kernel cannot get root back, so
``drop_privileges()`` is an explicit call.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import signal
import socket
import struct
import threading
from dataclasses import dataclass, field

from ..config import set_raw_sockets_check
from ..errors import PrivilegeError
from .capture import settle_warm

__all__ = ["CAPTURE", "Dropped", "SocketPool", "become", "drop_privileges", "dropped",
           "install_paths", "neigh_delete", "open_pool", "pool", "proc_status",
           "take_discovery", "take_packet", "take_raw", "target_user", "unreadable_for"]

# Packet sockets per family by default: one per raw stage (-sS -sU has two). Not more:
# closing a packet socket waits for an RCU grace period (~10 ms each, measured), and the
# unused ones are closed at exit.
CAPTURE = 1
PR_SET_KEEPCAPS, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 8, 24, 38, 1
_CAP_V3 = 0x20080522
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_ETH = {4: 0x0800, 6: 0x86DD}
SO_ATTACH_FILTER, SO_TIMESTAMPNS, SO_RCVBUFFORCE, SO_SNDBUFFORCE = 26, 35, 33, 32
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)  # BPF "ret #0": keep nothing
_NEIGH_REQ = struct.Struct("=BI16s")
_NEIGH_LOCK = threading.Lock()
NEIGH_TIMEOUT = 5.0  # seconds the helper gets to answer one request


@dataclass
class SocketPool:
    raw: dict[int, socket.socket] = field(default_factory=dict)
    packet: dict[int, list[socket.socket]] = field(default_factory=dict)
    discovery: dict[tuple[int, int], socket.socket] = field(default_factory=dict)
    neigh: socket.socket | None = None  # the neighbour helper's end of the pair
    helper_pid: int = 0

    def count(self) -> int:
        return (len(self.raw) + sum(len(v) for v in self.packet.values())
                + len(self.discovery))

    def close(self) -> None:
        socks = [*self.raw.values(), *self.discovery.values(),
                 *(s for v in self.packet.values() for s in v)]
        if self.neigh is not None:
            socks.append(self.neigh)
        for s in socks:
            s.close()
        self.raw, self.packet, self.discovery, self.neigh = {}, {}, {}, None
        if self.helper_pid:
            try:
                os.waitpid(self.helper_pid, 0)  # it exits when its end of the pair closes
            except ChildProcessError:
                pass
            self.helper_pid = 0


@dataclass(frozen=True)
class Dropped:
    """Who the process became: ``user`` (name), ``uid``, ``gid``, and the pool's size."""

    user: str
    uid: int
    gid: int
    sockets: int


_POOL: SocketPool | None = None
_DROPPED: Dropped | None = None


def pool() -> SocketPool | None:
    return _POOL


def dropped() -> Dropped | None:
    """Who this process became, or None if it never dropped."""
    return _DROPPED


def take_raw(family: int) -> socket.socket | None:
    """A dup of the pooled IPPROTO_RAW sender of ``family``, or None (no pool)."""
    s = _POOL.raw.get(family) if _POOL is not None else None
    return None if s is None else s.dup()


def take_packet(family: int) -> socket.socket | None:
    """A fresh pooled AF_PACKET socket (protocol 0: bind it to capture), or None (no pool).
    A pool that has run out raises: the open would fail anyway, with a worse message."""
    if _POOL is None or family not in _POOL.packet:
        return None
    left = _POOL.packet[family]
    if not left:
        raise PrivilegeError(
            f"this scan needed more IPv{family} packet captures than were opened "
            "before root was dropped; run it with --privileged, and please report it")
    return left.pop()


def take_discovery(family: int, proto: int) -> socket.socket | None:
    """A dup of the pooled raw receive socket (``proto`` ICMP/ICMPv6/TCP), or None."""
    s = _POOL.discovery.get((family, proto)) if _POOL is not None else None
    return None if s is None else s.dup()


def neigh_delete(family: int, ifindex: int, addr: bytes) -> int | None:
    """Ask the root helper to delete a neighbour entry: 0, an errno, or None (no helper)."""
    if _POOL is None or _POOL.neigh is None:
        return None
    s = _POOL.neigh
    try:
        with _NEIGH_LOCK:
            s.sendall(_NEIGH_REQ.pack(family, ifindex, addr.ljust(16, b"\0")))
            reply = s.recv(4)
    except TimeoutError:
        return errno.ETIMEDOUT
    except OSError as exc:  # the helper is gone (killed): the entry stays, as without root
        return exc.errno or errno.EPIPE
    return struct.unpack("=i", reply)[0] if len(reply) == 4 else errno.EPIPE


def open_pool(*, families: tuple[int, ...] = (4, 6), capture: int = CAPTURE,
              discovery: bool = True) -> SocketPool:
    """Open (as root) the sockets a scan of ``families`` needs and install the pool:
    ``capture`` packet sockets per family (one per SYN or UDP stage), discovery's.

    A family the kernel lacks (IPv6 disabled) is skipped: its scan fails as it would have.
    PrivilegeError when raw sockets cannot be opened at all."""
    global _POOL
    p = SocketPool()
    try:
        for fam in families:
            try:
                p.raw[fam] = _open_raw(fam, socket.IPPROTO_RAW, sndbuf=True)
            except OSError as exc:
                if isinstance(exc, PermissionError):
                    raise PrivilegeError(f"cannot open raw sockets ({exc.strerror}): run "
                                         "as root, or drop -sS/-sU/-sn") from None
                continue  # no such family here
            if capture:
                p.packet[fam] = [socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
                                 for _ in range(capture)]
            if discovery:
                icmp = socket.IPPROTO_ICMP if fam == 4 else socket.IPPROTO_ICMPV6
                for proto in (icmp, socket.IPPROTO_TCP):
                    p.discovery[(fam, proto)] = _open_raw(fam, proto, sndbuf=False)
        if discovery and p.raw:
            p.neigh, p.helper_pid = _start_neigh_helper(p)
    except BaseException:
        p.close()
        raise
    if _POOL is not None:
        _POOL.close()
    _POOL = p
    set_raw_sockets_check(lambda: _POOL is not None and bool(_POOL.raw))
    return p


def _open_raw(fam: int, proto: int, *, sndbuf: bool) -> socket.socket:
    s = socket.socket(_AF[fam], socket.SOCK_RAW, proto)
    try:
        if proto == socket.IPPROTO_RAW:
            if fam == 6:
                s.setsockopt(socket.IPPROTO_IPV6, 36, 1)  # IPV6_HDRINCL
        else:
            buf = ctypes.create_string_buffer(_DROP_ALL)
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                         struct.pack("HL", 1, ctypes.addressof(buf)))
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        force = SO_SNDBUFFORCE if sndbuf else SO_RCVBUFFORCE
        plain = socket.SO_SNDBUF if sndbuf else socket.SO_RCVBUF
        for opt in (force, plain):
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                break
            except OSError:
                continue
    except BaseException:
        s.close()
        raise
    return s


def _start_neigh_helper(p: SocketPool) -> tuple[socket.socket, int]:
    """Fork the root helper that deletes neighbour entries (see the module's text)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the helper: root, one netlink socket, one request kind
        code = 0
        try:
            ours.close()
            keep = theirs.fileno()
            os.closerange(3, keep)
            os.closerange(keep + 1, 1 << 16)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # dies with the scan
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the scan's to handle
            _serve_neigh(theirs)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    ours.settimeout(NEIGH_TIMEOUT)
    return ours, pid


def _serve_neigh(chan: socket.socket) -> None:
    from .neigh import NeighRequests

    nl = NeighRequests()  # the request side only: no event subscription
    while True:
        msg = chan.recv(64)
        if len(msg) != _NEIGH_REQ.size:
            return  # closed, or not a request: stop
        fam, ifindex, addr = _NEIGH_REQ.unpack(msg)
        if fam not in (4, 6):
            return
        try:
            err = nl.remove(fam, ifindex, addr[:4] if fam == 4 else addr)
        except OSError as exc:
            err = exc.errno or errno.EIO
        chan.sendall(struct.pack("=i", err))


def target_user() -> tuple[str, int, int]:
    """(name, uid, gid) to become: the sudo caller when ``SUDO_UID`` names one, else nobody."""
    uid_text, gid_text = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if uid_text.isdigit() and int(uid_text) != 0:
        uid = int(uid_text)
        try:
            pw = pwd.getpwuid(uid)
            name, gid = pw.pw_name, pw.pw_gid
        except KeyError:
            name, gid = f"uid {uid}", uid
        if gid_text.isdigit() and int(gid_text) != 0:
            gid = int(gid_text)
        return name, uid, gid
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        return "nobody", 65534, 65534
    return "nobody", pw.pw_uid, pw.pw_gid


def unreadable_for(uid: int, gid: int, paths: list[str]) -> str | None:
    """The first of ``paths`` that ``uid``/``gid`` could not read (or traverse to), tried in
    a forked child that becomes that user; None when all can be read.

    WHY: Python imports lazily, and our data files are read when needed. An interpreter
    installed under a private home (``/root/.pyenv``, mode 0700 ``/root``) cannot be read
    by nobody: after a drop the first late import would fail mid-scan."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            for path in paths:
                if not os.access(path, os.R_OK | os.X_OK if os.path.isdir(path) else os.R_OK):
                    os.write(w, path.encode()[:4000])
                    code = 1
                    break
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        bad = fh.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return bad.decode(errors="replace") or paths[0]


def install_paths() -> list[str]:
    """What a scan reads after the drop: the standard library, the installed packages
    (pyarrow's folder) and prtip_nb itself."""
    import importlib.util

    out = [os.path.dirname(os.__file__), os.path.dirname(os.path.dirname(__file__))]
    spec = importlib.util.find_spec("pyarrow")
    if spec is not None and spec.origin:
        out.append(os.path.dirname(spec.origin))
    return out


def proc_status(pid: int | str = "self") -> dict[str, str]:
    """The credential lines of /proc/<pid>/status (Uid, Gid, Groups, Cap*, NoNewPrivs)."""
    keys = {"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
            "NoNewPrivs"}
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = v.strip()
    return out


def drop_privileges(user: str | int | None = None, *, captures: int = 4,
                    discovery: bool = True) -> Dropped:
    """Open the sockets scans need, then become ``user`` (default: the sudo caller, else
    nobody) with no capabilities and ``no_new_privs``, for good (``pn.drop_privileges``).

    Afterwards ``pn.scan(..., method="syn")``, ``"udp"`` and ``pn.discover`` use the
    pooled sockets: any number of discoveries, and ``captures`` SYN or UDP stages (each
    takes a fresh packet socket; a -sS -sU scan takes two). Connect scans need nothing.
    Call it before reading untrusted data or files. In a notebook this is for ever: the
    kernel stays that user until it restarts, which is why nothing calls it for you.
    Raises PrivilegeError unless the process runs as root, or if the result is not
    verified in /proc/self/status (fail closed: nothing is scanned half-dropped)."""
    if _DROPPED is not None:
        return _DROPPED
    if os.geteuid() != 0:
        raise PrivilegeError("drop_privileges() needs a process running as root")
    open_pool(capture=captures, discovery=discovery)
    return become(user)


def become(user: str | int | None = None) -> Dropped:
    """The drop itself, after ``open_pool``: see ``drop_privileges``."""
    global _DROPPED
    if os.geteuid() != 0:
        raise PrivilegeError("drop_privileges() needs a process running as root")
    if user is None:
        name, uid, gid = target_user()
    else:
        pw = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
        name, uid, gid = pw.pw_name, pw.pw_uid, pw.pw_gid
    if uid == 0:
        raise PrivilegeError("drop_privileges(): the target user is root")
    settle_warm()  # no ring set-up in flight across the drop (see net.capture)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)
    for cap in range(_last_cap() + 1):  # the bounding set: gone for this process and its children
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # glibc applies it to every thread
    hdr = struct.pack("=Ii", _CAP_V3, 0)
    data = ctypes.create_string_buffer(24)  # two all-zero {effective, permitted, inheritable}
    if libc.capset(ctypes.c_char_p(hdr), data) != 0:
        raise PrivilegeError(f"capset failed: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise PrivilegeError(f"PR_SET_NO_NEW_PRIVS failed: {os.strerror(ctypes.get_errno())}")
    _verify(uid, gid)
    _DROPPED = Dropped(name, uid, gid, _POOL.count() if _POOL is not None else 0)
    return _DROPPED


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 63


def _verify(uid: int, gid: int) -> None:
    """Every thread: the new ids, no capability in any set, no_new_privs; and no way back."""
    for tid in os.listdir("/proc/self/task"):
        try:
            st = proc_status(f"self/task/{tid}")
        except (FileNotFoundError, ProcessLookupError):  # the thread ended since the listing
            continue  # (a short-lived helper, e.g. the capture prewarm): nothing left to check
        ids = {int(x) for x in st["Uid"].split()} | {int(x) for x in st["Gid"].split()}
        caps = [int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb") if k in st]
        if int(tid) == os.getpid():  # ours: the bounding set and no_new_privs too
            caps += [int(st["CapBnd"], 16), 1 - int(st.get("NoNewPrivs", "0"))]
        if ids != {uid, gid} or any(caps) or st["Groups"]:
            raise PrivilegeError(f"dropping root did not take in thread {tid}: {st}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PrivilegeError("dropping root did not take: setuid(0) still succeeds")
