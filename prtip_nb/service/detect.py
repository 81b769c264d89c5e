"""Service detection on one port: the per-service probe engine (``Detector.detect``).

1. On a TLS port (any probe's ``sslports``) handshake first; if that works, everything
   below runs inside TLS, and a service found there is reported as nmap reports it: HTTP
   as ``service="http", tunnel="ssl"`` (which text output prints ``ssl/http``).
2. The NULL probe: connect and listen for a banner. On ports whose usual service speaks
   first (the NULL probe's ``ports``) we wait for it. Elsewhere, after ``GRACE_S`` of
   silence the other probes start *alongside* it, on their own connections: a server that
   waits for the client costs a quarter second instead of nmap's six, and a slow banner
   still lands on the NULL connection.
3. Probes follow ``ServiceDB.plan`` (port hints first, then rarity <= intensity), at most
   ``PROBE_PARALLEL`` at once. The first hard match ends the search; a softmatch narrows it
   to probes that know that service; "ssl" brings the TLS handshake forward.

Every bound is a cap, enforced where bytes arrive: ``READ_CAP`` bytes per service over all
its connections, ``REGEX_WINDOW`` bytes per reply reach a regex (matched incrementally, in
``MatchPool``'s threads, each search stopped at ``RULE_TIMEOUT_S``, each service's matching
stopped at ``SERVICE_BUDGET_S`` of CPU), ``deadline`` seconds per
connection from connect to close (``asyncio.timeout_at``, not per read), ``service_timeout``
per service, ``MAX_HANDSHAKE_BYTES`` per TLS handshake. Replies are never stored beyond the
regex window: an endless banner costs 4 KiB of memory, not 64.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from .conn import RECV_SIZE, ChainTooLarge, Conn
from .matcher import ReplyMatcher
from .matchpool import MatchPool, shared_pool
from .outcome import Reply, ServiceResult, Svc
from .servicedb import REGEX_WINDOW, Probe, ServiceDB, default_db

DEADLINE_S = 5.0  # per connection, over the whole exchange
READ_CAP = 64 * 1024  # bytes per service, over all its connections
GRACE_S = 0.25  # NULL-probe silence before the other probes start alongside
REPLY_IDLE_S = 2.0  # after some reply bytes: silence that ends the reply
PROBE_PARALLEL = 3  # probe connections at once per service (plus the NULL one)
_TLS_PROBE = Probe("TLSHandshake", tls=True, rarity=1)


class Detector:
    """Identifies the service on one port at a time (many at once on one event loop)."""

    def __init__(
        self,
        *,
        db: ServiceDB | None = None,
        intensity: int = 7,
        deadline: float = DEADLINE_S,
        service_timeout: float | None = None,
        read_cap: int = READ_CAP,
        pool: MatchPool | None = None,
    ) -> None:
        if not 0 <= intensity <= 9:
            raise ValueError(f"version intensity must be 0..9, not {intensity}")
        self.db = db or default_db()
        self.intensity = intensity
        self.deadline = deadline
        self.service_timeout = service_timeout or 2 * deadline
        self.read_cap = read_cap
        self.pool = pool or shared_pool()
        self.tls_probe = next((p for p in self.db.probes if p.tls), _TLS_PROBE)

    async def detect(self, host: str, port: int, *, budget: float | None = None) -> ServiceResult:
        """Identify the service on one open TCP port (within ``budget`` seconds)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        svc = Svc(host, port, t0 + (budget or self.service_timeout))
        if port in self.db.exclude:
            svc.notes.append("excluded: never probed (printer port)")
        elif not (port in self.db.ssl_ports and await self._via_tls(svc)):
            await self._session(svc, tls=False)
        return svc.result(loop.time() - t0)

    async def _via_tls(self, svc: Svc) -> bool:
        """Handshake first; True if the port turned out to be TLS (or refused us)."""
        r = await self._exchange(svc, self.tls_probe, True, 0.0)
        svc.tls_tried = True
        if r.handshake_ok:
            await self._session(svc, tls=True)
            return True
        return r.refused or svc.chain_aborted

    async def _session(self, svc: Svc, *, tls: bool) -> None:
        null = self.db.null
        wait = null.wait_ms / 1000
        grace = wait if self.db.hinted_null(svc.port) and not tls else GRACE_S
        reply = Reply(null, tls)
        a: asyncio.Task[Reply] | None = asyncio.create_task(
            self._exchange(svc, null, tls, wait, reply)
        )
        assert a is not None
        try:
            await asyncio.wait({a}, timeout=grace)
            if not a.done() and reply.total > 0:
                await a  # it is talking: let the banner finish before anything else
            if a.done():
                if svc.take(a.result(), null_probe=True):
                    return
                a = None
            await self._probe_all(svc, tls, a)
        finally:
            if a is not None and not a.done():
                a.cancel()
                await asyncio.gather(a, return_exceptions=True)

    def _worth(self, svc: Svc, p: Probe, tls: bool) -> bool:
        if p.tls:
            return not tls and not svc.tls_tried
        if svc.soft is not None and svc.soft.service != "ssl":
            # nmap's rule: after a softmatch only probes that can name that service help.
            return any(rule.service == svc.soft.service for rule in p.chain)
        return True

    async def _probe_all(self, svc: Svc, tls: bool, a: asyncio.Task[Reply] | None) -> None:
        loop = asyncio.get_running_loop()
        queue = deque(self.db.plan(svc.port, self.intensity, tls=tls))
        pending: set[asyncio.Task[Reply]] = {a} if a is not None else set()
        try:
            while True:
                probing = len(pending) - (a in pending)
                while queue and probing < PROBE_PARALLEL and svc.budget_left(loop.time()):
                    p = queue.popleft()
                    if not self._worth(svc, p, tls):
                        continue
                    wait = 0.0 if p.tls else p.wait_ms / 1000
                    pending.add(asyncio.create_task(self._exchange(svc, p, tls or p.tls, wait)))
                    probing += 1
                if not pending:
                    return
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    r = task.result()
                    if r.probe.tls and not tls:
                        svc.tls_tried = True
                        if r.handshake_ok:
                            await self._cancel(pending)
                            pending = set()
                            await self._session(svc, tls=True)
                            return
                        if svc.chain_aborted:
                            return
                        continue
                    if svc.take(r, null_probe=task is a):
                        return
                    if svc.soft is not None and svc.soft.service == "ssl" and not svc.tls_tried:
                        queue.appendleft(self.tls_probe)
        finally:
            await self._cancel(pending)

    @staticmethod
    async def _cancel(tasks: set[asyncio.Task[Reply]]) -> None:
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _exchange(
        self, svc: Svc, probe: Probe, tls: bool, wait_s: float, reply: Reply | None = None
    ) -> Reply:
        """One connection: connect, maybe handshake, send the probe, read its reply."""
        loop = asyncio.get_running_loop()
        r = reply if reply is not None else Reply(probe, tls)
        t0 = loop.time()
        end = min(t0 + self.deadline, svc.end)
        if end <= t0:
            r.cut = True
            return r
        conn: Conn | None = None
        try:
            conn = Conn(svc.family)  # may fail too: EMFILE when descriptors run out
            async with asyncio.timeout_at(end):
                svc.handshakes += 1  # an attempt: refused mid-detection is "not verified"
                await conn.connect(svc.host, svc.port)
                if tls:
                    from .tls import client_context, tls_info

                    await conn.handshake(client_context())
                    r.handshake_ok = True
                    if svc.tls is None and conn.tls is not None:
                        svc.tls = tls_info(conn.tls, conn.handshake_bytes)
                if not probe.tls:
                    if probe.payload:
                        await conn.send(probe.payload)
                    await self._read(svc, conn, r, min(end, loop.time() + wait_s))
        except TimeoutError:
            r.cut = True
        except ChainTooLarge as exc:
            r.error = str(exc)
            svc.chain_aborted = True
        except ConnectionRefusedError:
            r.refused = True
        except ssl.SSLError as exc:
            r.error = f"SSLError: {exc}"
            # OpenSSL refuses a handshake message over its own limit (100 KiB by default)
            # before our byte count gets there: the same verdict, reached sooner.
            svc.chain_aborted |= exc.reason == "EXCESSIVE_MESSAGE_SIZE" and not r.handshake_ok
        except OSError as exc:  # resets, unreachable, ...
            r.error = f"{type(exc).__name__}: {exc}"
        finally:
            if conn is not None:
                conn.close()
            r.elapsed = loop.time() - t0
        return r

    async def _read(self, svc: Svc, conn: Conn, r: Reply, until: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            limit = until - loop.time()
            if r.total:
                limit = min(limit, REPLY_IDLE_S)
            want = min(RECV_SIZE, self.read_cap - svc.read)
            if want <= 0:
                svc.capped = True
                return
            if limit <= 0:
                return
            try:
                async with asyncio.timeout(limit):
                    chunk = await conn.recv(want)
            except TimeoutError:
                return
            if not chunk:
                r.eof = True
                return
            svc.read += len(chunk)
            r.total += len(chunk)
            room = REGEX_WINDOW - len(r.data)
            if room > 0:
                r.data += chunk[:room]
                # INCREMENTAL: the matcher keeps which rules can still match this reply;
                # what arrives while it runs is read in one piece next time round.
                if r.matcher is None:
                    r.matcher = ReplyMatcher(r.probe, svc.budget)
                m = await self.pool.match(r.matcher, bytes(r.data))
                svc.timeouts.update(dict.fromkeys(r.matcher.timeouts))
                if m is not None:
                    r.match = m
                    if not m.soft:
                        return
