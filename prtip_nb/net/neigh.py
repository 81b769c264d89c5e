"""The kernel's neighbour table (ARP / NDP) and routes, read for host discovery.

WHY THE KERNEL RESOLVES. nmap finds on-link hosts with ARP requests and neighbour
solicitations that it builds itself, at layer 2. We never write layer-2 frames (a frame
built for a guessed interface can leave the machine), so discovery sends an ordinary IP
packet to the host and lets the kernel ARP / NDP for it, then reads the kernel's answer:
an entry REACHABLE / STALE / DELAY / PROBE with a link-layer address means the host
answered ("arp-response" / "nd-response", as nmap says); INCOMPLETE / FAILED, nothing.

- ``NeighWatch``: a netlink socket subscribed to neighbour events (RTMGRP_NEIGH), so a
  resolution is seen the moment the kernel records it, without polling; ``dump()`` reads
  the whole table (RTM_GETNEIGH) and ``delete()`` forgets an entry (RTM_DELNEIGH). A
  stale entry from before the scan would say "up" for a host that left, and an
  INCOMPLETE one is re-asked only once a second: deleting our targets' entries before
  (and between) rounds makes the kernel ask afresh.
- ``Routes``: which targets are on-link (a connected route without a gateway) and on
  which interface, from /proc/net/route and /proc/net/ipv6_route (the main table).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator

from ..errors import ScanError

__all__ = ["RESOLVED", "NeighRequests", "NeighWatch", "Routes", "is_local", "local_addresses"]

NETLINK_ROUTE = 0
RTMGRP_NEIGH = 0x4
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NDA_DST, NDA_LLADDR = 1, 2
NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE = 0x01, 0x02, 0x04, 0x08, 0x10
NUD_FAILED, NUD_NOARP, NUD_PERMANENT = 0x20, 0x40, 0x80
#: States that mean "the host answered": it has a link-layer address we learnt.
RESOLVED = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE
#: Entries we must not delete (configured by hand, or no ARP on the link).
STATIC = NUD_PERMANENT | NUD_NOARP

_NLMSG = struct.Struct("=IHHII")
_NDMSG = struct.Struct("=BBHiHBB")
_RTA = struct.Struct("=HH")
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_FAM = {socket.AF_INET: 4, socket.AF_INET6: 6}

Neighbour = tuple[int, bytes, int, int, bool]  # family, address, ifindex, state, has lladdr


def _parse(data: bytes) -> Iterator[tuple[int, Neighbour | None]]:
    """(message type, neighbour or None) for each netlink message in ``data``.

    The kernel writes these, but a parser that reads past a length it was given is a bug
    waiting for a truncated read: every length (message, ndmsg, attribute, error code)
    is checked against what is there, and a message that overruns ``data`` ends the walk."""
    off = 0
    while off + _NLMSG.size <= len(data):
        length, typ, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size or off + length > len(data):
            return
        body = off + _NLMSG.size
        if typ in (RTM_NEWNEIGH, RTM_DELNEIGH) and length >= _NLMSG.size + _NDMSG.size:
            fam, _p1, _p2, ifindex, state, _fl, _ty = _NDMSG.unpack_from(data, body)
            dst, lladdr = b"", False
            a = body + _NDMSG.size
            end = off + length
            while a + _RTA.size <= end:
                alen, atype = _RTA.unpack_from(data, a)
                if alen < _RTA.size or a + alen > end:
                    break
                if atype == NDA_DST:
                    dst = data[a + 4 : a + alen]
                elif atype == NDA_LLADDR:
                    lladdr = alen > 4 and any(data[a + 4 : a + alen])
                a += (alen + 3) & ~3
            yield typ, (_FAM.get(fam, 0), dst, ifindex, state, lladdr) if dst else None
        elif typ == NLMSG_ERROR and length >= _NLMSG.size + 4:
            code = struct.unpack_from("=i", data, body)[0]
            yield typ, None if code == 0 else (-code, b"", 0, 0, False)
        else:
            yield typ, None
        off += (length + 3) & ~3


class NeighRequests:
    """The request side of the neighbour table: dump and delete (one netlink socket)."""

    def __init__(self) -> None:
        try:
            self.req = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        except OSError as exc:  # out of descriptors, or netlink refused: not a bare OSError
            raise ScanError(f"host discovery cannot reach the neighbour table: {exc}") from exc
        try:
            self.req.bind((0, 0))
        except OSError as exc:
            self.req.close()
            raise ScanError(f"host discovery cannot reach the neighbour table: {exc}") from exc
        self._seq = 0

    def close(self) -> None:
        self.req.close()

    def _request(self, typ: int, flags: int, body: bytes) -> Iterator[tuple[int, Neighbour | None]]:
        self._seq += 1
        msg = _NLMSG.pack(_NLMSG.size + len(body), typ, NLM_F_REQUEST | flags, self._seq, 0)
        self.req.send(msg + body)
        while True:
            data = self.req.recv(1 << 17)
            for typ_, n in _parse(data):
                if typ_ == NLMSG_DONE:
                    return
                yield typ_, n
                if typ_ == NLMSG_ERROR:
                    return

    def dump(self, family: int) -> list[Neighbour]:
        """Every neighbour entry of ``family`` (4 or 6)."""
        body = _NDMSG.pack(_AF[family], 0, 0, 0, 0, 0, 0)
        return [n for typ, n in self._request(RTM_GETNEIGH, NLM_F_DUMP, body)
                if typ == RTM_NEWNEIGH and n is not None]

    def remove(self, family: int, ifindex: int, addr: bytes) -> int:
        """Ask the kernel to forget ``addr`` (4 or 16 bytes) on ``ifindex``: 0, or the
        errno it answered (ENOENT: there was no entry)."""
        attr = _RTA.pack(_RTA.size + len(addr), NDA_DST) + addr
        body = _NDMSG.pack(_AF[family], 0, 0, ifindex, 0, 0, 0) + attr
        for typ, n in self._request(RTM_DELNEIGH, NLM_F_ACK, body):
            if typ == NLMSG_ERROR:
                return 0 if n is None else n[0]
        return 0

    def delete(self, family: int, ifindex: int, addr: bytes) -> bool:
        """Forget the entry for ``addr`` on ``ifindex``; False if there was none. After
        root was dropped, the root helper of net.privileges sends the request."""
        from .privileges import neigh_delete

        err = neigh_delete(family, ifindex, addr)
        return (self.remove(family, ifindex, addr) if err is None else err) == 0




class NeighWatch(NeighRequests):
    """Neighbour events as they happen (``events()``), plus dump and delete requests."""

    def __init__(self) -> None:
        super().__init__()
        try:
            self.events_sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                             NETLINK_ROUTE)
        except OSError as exc:
            self.req.close()
            raise ScanError(f"host discovery cannot watch the neighbour table: {exc}") from exc
        try:
            self.events_sock.bind((0, RTMGRP_NEIGH))
            self.events_sock.setblocking(False)
        except OSError as exc:
            self.close()
            raise ScanError(f"host discovery cannot watch the neighbour table: {exc}") from exc
        try:
            self.events_sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
        except OSError:
            pass  # the default buffer; an overrun is caught up by dump()
        self.overrun = False  # events were lost (ENOBUFS): dump() to catch up

    def fileno(self) -> int:
        return self.events_sock.fileno()

    def close(self) -> None:
        self.events_sock.close()
        super().close()

    def events(self) -> Iterator[Neighbour]:
        """New or changed entries since the last call (non-blocking)."""
        while True:
            try:
                data = self.events_sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overrun = True
                    continue
                raise
            for typ, n in _parse(data):
                if typ == RTM_NEWNEIGH and n is not None:
                    yield n


# -- routes ------------------------------------------------------------------------------
RTF_GATEWAY, RTF_REJECT = 0x2, 0x200


class Routes:
    """The main routing table, for one question: is ``addr`` on-link, and where?"""

    def __init__(self) -> None:
        # family -> [(prefix length, network int, ifname, on-link)], longest prefixes first
        self.table: dict[int, list[tuple[int, int, str, bool]]] = {4: [], 6: []}
        try:
            with open("/proc/net/route") as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    dest = int.from_bytes(struct.pack("<I", int(f[1], 16)), "big")
                    mask = int.from_bytes(struct.pack("<I", int(f[7], 16)), "big")
                    flags = int(f[3], 16)
                    self.table[4].append((bin(mask).count("1"), dest, f[0],
                                          not flags & (RTF_GATEWAY | RTF_REJECT)))
        except OSError:
            pass
        try:
            with open("/proc/net/ipv6_route") as fh:
                for line in fh:
                    f = line.split()
                    flags = int(f[8], 16)
                    if f[9] == "lo":  # local and unreachable routes
                        continue
                    self.table[6].append((int(f[1], 16), int(f[0], 16), f[9],
                                          not flags & (RTF_GATEWAY | RTF_REJECT)))
        except OSError:
            pass
        for rows in self.table.values():
            rows.sort(key=lambda r: -r[0])
        self._index: dict[str, int] = {}

    def onlink(self, family: int, addr: bytes) -> int:
        """The interface index ``addr`` is directly attached to, or 0 (routed, none)."""
        value = int.from_bytes(addr, "big")
        bits = 32 if family == 4 else 128
        for plen, net, ifname, direct in self.table[family]:
            if plen == 0 or value >> (bits - plen) == net >> (bits - plen):
                if not direct or plen == 0:
                    return 0
                if ifname not in self._index:
                    try:
                        self._index[ifname] = socket.if_nametoindex(ifname)
                    except OSError:
                        self._index[ifname] = 0
                return self._index[ifname]
        return 0


def local_addresses() -> set[bytes]:
    """This namespace's own addresses, packed: IPv4 from the local table in
    /proc/net/fib_trie ("/32 host LOCAL"; a subnet's broadcast address, which bind()
    would accept too, is "link BROADCAST" there), IPv6 from /proc/net/if_inet6."""
    out: set[bytes] = set()
    try:
        with open("/proc/net/fib_trie") as fh:
            last = None
            for line in fh:
                text = line.strip()
                if text.startswith("|--"):
                    last = text[3:].strip()
                elif text.startswith("/32 host LOCAL") and last is not None:
                    out.add(socket.inet_aton(last))
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6") as fh:
            out.update(bytes.fromhex(line.split()[0]) for line in fh if line.strip())
    except OSError:
        pass
    return out


def is_local(family: int, addr: bytes, local: set[bytes] | None = None) -> bool:
    """True if ``addr`` is one of this namespace's own addresses (127/8 included)."""
    if family == 4 and addr[0] == 127:
        return True
    return addr in (local_addresses() if local is None else local)

