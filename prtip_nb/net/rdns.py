"""Reverse DNS, nmap's way: many PTR queries in flight over UDP, nmap's retries, a cache.

``resolve_names(addresses, servers=None)`` returns ``{address: HostName}`` for every address.
The names come, in order, from:

1. this process's cache (names with their record's TTL, NXDOMAIN for ``NEGATIVE_TTL_S``;
   timeouts and unreachable servers are not cached);
2. ``/etc/hosts`` (first name of the first line naming the address, as nmap reads it);
3. the DNS servers: ``servers`` (``--dns-servers``), else the ``nameserver`` lines of
   ``/etc/resolv.conf``, as nmap does. No server: no DNS (a note says so).

Loopback and link-local addresses are answered from /etc/hosts only: nobody's DNS server
knows them, and a scan of a private namespace's loopback must send nothing out.

NMAP'S SCHEDULE (nmap_dns.cc). Each server starts with 10 queries in flight ("capacity");
every answer adds 2 (up to 200), a timeout scales it by 0.9. A query is retried on the
same server after 4, 4 and 5 s with one server (2.5 and 4 s with two; 2.5 and 3 s with
three or more), then moves to the next server (capacity x 0.7), at most 3 servers per
address. NXDOMAIN or an empty answer ends the address without a name; SERVFAIL counts
as a timeout; REFUSED, FORMERR and NOTIMP replies are ignored (the query times out).
Every wait is bounded: the whole run ends by the sum of the schedule.

FORWARD CONFIRMATION. A PTR name is then looked up forward (A for IPv4, AAAA for IPv6)
on the same servers and flagged ``confirmed`` when the answer holds the address
(forward-confirmed reverse DNS): a PTR record alone is whatever the address's owner wrote.
nmap does not do this; it costs one more round trip per name, in parallel too.
"""

from __future__ import annotations

import errno
import heapq
import ipaddress
import os
import select
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..config import check_dns_servers as check_servers
from ..probes import dns

__all__ = ["HostName", "Resolver", "clear_cache", "read_resolv_conf", "resolve_names"]

RESOLV_CONF = "/etc/resolv.conf"
HOSTS_FILE = "/etc/hosts"
#: nmap's retransmission schedule (ms) by number of servers: 1, 2, 3+.
READ_TIMEOUTS_MS = ((4000, 4000, 5000), (2500, 4000), (2500, 3000))
SERVERS_TO_TRY = 3
CAPACITY_MIN, CAPACITY_MAX, CAPACITY_UP = 10, 200, 2
CAPACITY_MINOR, CAPACITY_MAJOR = 0.9, 0.7
NEGATIVE_TTL_S = 60.0  # how long an NXDOMAIN or a timeout stays cached
MAX_TTL_S = 3600.0
CACHE_SIZE = 65_536
PORT = 53


@dataclass(frozen=True)
class HostName:
    """What reverse DNS found for one address.

    ``status``: "ok" (a name), "nxdomain" (no name), "timeout" (no server answered),
    "unreachable" (no server could be reached: no route, nothing listening), "no-server"
    (nothing to ask), or "hosts" (the name is from /etc/hosts).
    ``confirmed``: the name's forward lookup gives the address back (None: not checked).
    """

    address: str
    name: str | None
    status: str
    confirmed: bool | None = None
    cached: bool = False


# -- the cache (per process, thread-safe) ----------------------------------------------------
_cache: OrderedDict[tuple[tuple[str, ...], str], tuple[float, HostName]] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every cached name (the next lookups go to the servers)."""
    with _cache_lock:
        _cache.clear()


def _cache_get(servers: tuple[str, ...], address: str) -> HostName | None:
    with _cache_lock:
        hit = _cache.get((servers, address))
        if hit is None:
            return None
        expires, value = hit
        if expires < time.monotonic():
            del _cache[(servers, address)]
            return None
        _cache.move_to_end((servers, address))
        return HostName(value.address, value.name, value.status, value.confirmed, cached=True)


def _cache_put(servers: tuple[str, ...], value: HostName, ttl: float) -> None:
    with _cache_lock:
        _cache[(servers, value.address)] = (time.monotonic() + ttl, value)
        _cache.move_to_end((servers, value.address))
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


# -- configuration files -------------------------------------------------------------------
def read_resolv_conf(path: str = RESOLV_CONF) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf (nmap reads only those lines)."""
    out: list[str] = []
    try:
        with open(path) as fh:
            for line in fh:
                words = line.split("#", 1)[0].split(";", 1)[0].split()
                if len(words) >= 2 and words[0] == "nameserver":
                    try:
                        out.append(str(ipaddress.ip_address(words[1].split("%")[0])))
                    except ValueError:
                        continue
    except OSError:
        return []
    return list(dict.fromkeys(out))


def _read_hosts(path: str = HOSTS_FILE) -> dict[str, str]:
    names: dict[str, str] = {}
    try:
        with open(path) as fh:
            for line in fh:
                words = line.split("#", 1)[0].split()
                if len(words) < 2:
                    continue
                try:
                    addr = str(ipaddress.ip_address(words[0]))
                except ValueError:
                    continue
                names.setdefault(addr, words[1])
    except OSError:
        pass
    return names




# -- the resolver ------------------------------------------------------------------------------
@dataclass
class _Query:
    address: str
    qname: str
    qtype: int
    server: int  # index into the servers
    first_server: int
    tries: int = 0
    servers_tried: int = 0
    deadline: float = 0.0
    qid: int = -1
    wire: bytes = b""  # the question section, built once (only the id changes)


class Resolver:
    """One run over a set of addresses; see the module docstring for the schedule."""

    def __init__(self, servers: Sequence[str], *, confirm: bool = True,
                 schedule_ms: Sequence[int] | None = None) -> None:
        self.servers = list(servers)
        self.confirm = confirm
        row = READ_TIMEOUTS_MS[min(len(self.servers), len(READ_TIMEOUTS_MS)) - 1] \
            if self.servers else (1000,)
        self.schedule = [t / 1000 for t in (schedule_ms or row)]
        self.stats = {"sent": 0, "ok": 0, "nxdomain": 0, "timeout": 0, "servfail": 0,
                      "unreachable": 0}

    def run(self, addresses: Sequence[str]) -> dict[str, HostName]:
        """``{address: HostName}`` for each address (status "timeout" when none answered)."""
        self.results: dict[str, HostName] = {}
        self.ttls: dict[str, int] = {}
        self._names: dict[str, str] = {}  # address -> PTR name awaiting confirmation
        self._socks: list[socket.socket | None] = [_open(s) for s in self.servers]
        n = len(self.servers)
        self._capacity = [float(CAPACITY_MIN)] * n
        self._waiting: list[deque[_Query]] = [deque() for _ in range(n)]
        self._fresh: deque[_Query] = deque(
            _Query(a, dns.reverse_name(a), dns.PTR, 0, 0) for a in addresses)
        self._inflight: dict[int, _Query] = {}
        # (deadline, qid, query): the next timeout without scanning every query in flight;
        # an entry whose query is no longer in flight under that id is skipped.
        self._timeouts: list[tuple[float, int, _Query]] = []
        self._on_wire = [0] * n
        try:
            self._loop()
        finally:
            for s in self._socks:
                if s is not None:
                    s.close()
        # No server could be reached at all (no route, nothing listening): say so.
        left = "unreachable" if all(s is None for s in self._socks) else "timeout"
        for q in [*self._inflight.values(), *self._fresh,
                  *(q for w in self._waiting for q in w)]:
            self._finish(q, left)
        return self.results

    def _loop(self) -> None:
        # BOUNDED: no query outlives its schedule on SERVERS_TO_TRY servers, twice (PTR,
        # then forward); the loop also stops at that total, whatever happens.
        stop_at = time.monotonic() + 2 * SERVERS_TO_TRY * sum(self.schedule) + 1.0
        buf = bytearray(4096)
        socks = self._socks
        timeouts = self._timeouts
        inflight = self._inflight
        while (self._fresh or inflight or any(self._waiting)) \
                and time.monotonic() < stop_at:
            now = time.monotonic()
            while timeouts and timeouts[0][0] <= now:
                _deadline, qid, q = heapq.heappop(timeouts)
                if inflight.get(qid) is not q:
                    continue  # answered (or already moved on) since
                if q.deadline > now:  # SERVFAIL set it to 0 and pushed it again
                    continue
                del inflight[qid]
                self._on_wire[q.server] -= 1
                self._move_on(q)
            self._send_what_fits()
            live = [s for s in socks if s is not None]
            if not live:
                return
            while timeouts and inflight.get(timeouts[0][1]) is not timeouts[0][2]:
                heapq.heappop(timeouts)  # stale heads: not what the next wait is for
            wait = (timeouts[0][0] if timeouts else now + 0.05) - now
            ready, _, _ = select.select(live, [], [], max(0.0, min(wait, 0.5)))
            for s in ready:
                i = socks.index(s)
                for _ in range(1024):  # drain, bounded
                    try:
                        nbytes = s.recv_into(buf)
                    except BlockingIOError:
                        break
                    except OSError as exc:  # ECONNREFUSED: nothing listens there
                        if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                         errno.ENETUNREACH):
                            self._kill(i)
                        break
                    reply = dns.parse_reply(bytes(buf[:nbytes]))
                    if reply is not None:
                        self._answer(reply)

    def _send_what_fits(self) -> None:
        for i, s in enumerate(self._socks):
            if s is None:
                continue
            while self._on_wire[i] < int(self._capacity[i]) and self._socks[i] is not None:
                if self._waiting[i]:
                    self._send(i, self._waiting[i].popleft())
                elif self._fresh:
                    q = self._fresh.popleft()
                    if q.tries == 0 and q.servers_tried == 0 and q.qtype == dns.PTR:
                        q.first_server = i
                    self._send(i, q)
                else:
                    break

    def _send(self, i: int, q: _Query) -> None:
        s = self._socks[i]
        assert s is not None
        qid = int.from_bytes(os.urandom(2), "big")  # not secrets: its import
        for _ in range(0x10000):
            if qid not in self._inflight:
                break
            qid = (qid + 1) & 0xFFFF
        q.qid, q.server = qid, i
        q.deadline = time.monotonic() + self.schedule[min(q.tries, len(self.schedule) - 1)]
        q.tries += 1
        self._inflight[qid] = q
        heapq.heappush(self._timeouts, (q.deadline, qid, q))
        self._on_wire[i] += 1
        self.stats["sent"] += 1
        try:
            if not q.wire:
                q.wire = dns.question(q.qname, q.qtype)
            s.send(dns.query_bytes(qid, q.wire))
        except BlockingIOError:
            pass  # counts as sent and lost: the timeout retries it
        except OSError:  # ENETUNREACH and the like: that server cannot be reached
            self._kill(i)

    def _move_on(self, q: _Query, dead: bool = False) -> None:
        """``q`` timed out on its server: retry there, or on the next one, or give up."""
        n = len(self.servers)
        if not dead:
            self._capacity[q.server] = max(CAPACITY_MIN, self._capacity[q.server] * CAPACITY_MINOR)
            if q.tries < len(self.schedule):
                self._waiting[q.server].append(q)
                return
        self._capacity[q.server] = max(CAPACITY_MIN, self._capacity[q.server] * CAPACITY_MAJOR)
        q.servers_tried += 1
        nxt = (q.server + 1) % n
        for _ in range(n):
            if self._socks[nxt] is not None or nxt == q.first_server:
                break
            nxt = (nxt + 1) % n
        if nxt == q.first_server or q.servers_tried >= SERVERS_TO_TRY \
                or self._socks[nxt] is None:
            gone = dead and all(s is None for s in self._socks)
            self.stats["unreachable" if gone else "timeout"] += 1
            self._finish(q, "unreachable" if gone else "timeout")
            return
        q.server, q.tries = nxt, 0
        self._waiting[nxt].append(q)

    def _kill(self, i: int) -> None:
        s = self._socks[i]
        if s is not None:
            s.close()
        self._socks[i] = None
        for qid in [k for k, q in self._inflight.items() if q.server == i]:
            q = self._inflight.pop(qid)
            self._on_wire[i] -= 1
            self._move_on(q, dead=True)
        while self._waiting[i]:
            self._move_on(self._waiting[i].popleft(), dead=True)

    def _finish(self, q: _Query, status: str) -> None:
        if q.address in self.results:
            return
        if q.qtype == dns.PTR:
            self.results[q.address] = HostName(q.address, None, status)
            return
        # The forward lookup of a PTR name: the name stands, confirmed or not.
        name = self._names.pop(q.address)
        self.results[q.address] = HostName(q.address, name, "ok", status == "confirmed")

    def _answer(self, reply: dns.Reply) -> None:
        q = self._inflight.get(reply.qid)
        if q is None or reply.qname.lower() != q.qname.lower() or reply.qtype != q.qtype:
            return  # not ours (a late duplicate, a spoof): ignored
        if reply.rcode in (dns.FORMERR, dns.NOTIMP, dns.REFUSED):
            return  # nmap ignores these: the query times out
        if reply.rcode == dns.SERVFAIL:
            self.stats["servfail"] += 1
            q.deadline = 0.0  # handled as a timeout at the next turn, as nmap does
            heapq.heappush(self._timeouts, (0.0, reply.qid, q))
            return
        del self._inflight[reply.qid]
        self._on_wire[q.server] -= 1
        self._capacity[q.server] = min(CAPACITY_MAX, self._capacity[q.server] + CAPACITY_UP)
        if q.qtype != dns.PTR:
            confirmed = q.address in reply.addresses()  # both canonical text
            self._finish(q, "confirmed" if confirmed else "unconfirmed")
            return
        name = reply.ptr_name() if reply.rcode == dns.NOERROR else None
        if name is None:
            self.stats["nxdomain"] += 1
            self._finish(q, "nxdomain")
            return
        self.stats["ok"] += 1
        self.ttls[q.address] = reply.min_ttl()
        if not self.confirm:
            self.results[q.address] = HostName(q.address, name, "ok")
            return
        self._names[q.address] = name
        qtype = dns.AAAA if ":" in q.address else dns.A
        # Ahead of the PTR queries still to go: a name waits one round trip, not the run.
        self._fresh.appendleft(_Query(q.address, name, qtype, q.server, q.server))


def _open(server: str) -> socket.socket | None:
    """A connected, non-blocking UDP socket to ``server``:53 (None: no route there)."""
    s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        s.connect((server, PORT))
    except OSError:
        s.close()
        return None
    return s


def _canonical(address: str) -> str:
    """``address`` as ipaddress writes it; a canonical dotted quad is returned as is (the
    common case, without ipaddress's ~5 µs an address)."""
    parts = address.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and (p == "0" or p[0] != "0")
                               and len(p) <= 3 and int(p) < 256 for p in parts):
        return address
    return str(ipaddress.ip_address(address))


def _local_only(address: str) -> bool:
    if "." in address and ":" not in address:  # canonical IPv4 (see _canonical)
        return address.startswith(("127.", "169.254.")) or address == "0.0.0.0"
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


def resolve_names(addresses: Iterable[str], servers: Sequence[str] | None = None, *,
                  confirm: bool = True, hosts_file: str | None = HOSTS_FILE,
                  resolv_conf: str = RESOLV_CONF, use_cache: bool = True
                  ) -> dict[str, HostName]:
    """The reverse-DNS name of each address (see the module docstring for the order)."""
    wanted = list(dict.fromkeys(_canonical(a) for a in addresses))
    chosen = check_servers(servers) if servers else tuple(read_resolv_conf(resolv_conf))
    out: dict[str, HostName] = {}
    ask: list[str] = []
    etc = _read_hosts(hosts_file) if hosts_file else {}
    for a in wanted:
        hit = _cache_get(chosen, a) if use_cache else None
        if hit is not None and confirm and hit.name is not None and hit.confirmed is None:
            hit = None  # cached by a lookup that did not confirm: this one does
        if hit is not None:
            out[a] = hit
        elif a in etc:
            out[a] = HostName(a, etc[a], "hosts")
        elif _local_only(a) or not chosen:
            out[a] = HostName(a, None, "no-server" if not chosen else "nxdomain")
        else:
            ask.append(a)
    if ask:
        res = Resolver(chosen, confirm=confirm)
        found = res.run(ask)
        for a in ask:
            value = found.get(a, HostName(a, None, "timeout"))
            out[a] = value
            # Only answers are cached: a timeout or an unreachable server may be gone in a
            # moment (a lab started after the first scan of a notebook).
            if use_cache and value.status in ("ok", "nxdomain"):
                ttl = NEGATIVE_TTL_S if value.name is None else res.ttls.get(a, 0)
                _cache_put(chosen, value, min(MAX_TTL_S, max(1.0, ttl)))
    return {a: out[a] for a in wanted}
