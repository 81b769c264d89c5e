"""What a script may do: bounded helpers, and nothing else (``ctx`` in ``run(ctx)``).

- ``await ctx.connect(port=None, tls=None)``: a :class:`Conn` to the target (TLS when the
  port is tunnelled through TLS, or when asked); ``send``, ``recv(n)``, ``recv_line``,
  ``recv_until``, ``start_tls``, each with a deadline.
- ``await ctx.http(method, path, headers=, body=)``: a small HTTP/1.1 client
  (``Connection: close``, Content-Length, chunked or until close), :class:`HttpResponse`;
  a plain GET is shared with the scan's other scripts (``httpcache``: one per page).
- ``ctx.target`` / ``ctx.service``: the port and what ``-sV`` said; ``ctx.args``: the
  ``--script-args``; ``ctx.arg("key")`` looks up ``<script id>.key`` first, as NSE does.

BUDGET. Every byte read over all of a run's connections counts against the script's
``max_bytes``; past it, :class:`BudgetExceeded` ends the run (an error row). Each read
waits at most ``io_timeout`` and never past the run's own deadline, which the engine
enforces as well, so a tarpit costs one script timeout at most.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prtip_nb.nse.api import Target

if TYPE_CHECKING:
    from prtip_nb.nse.httpcache import HttpCache

#: Ports where TLS is spoken from the first byte (for a script run without -sV).
TLS_PORTS = frozenset({443, 465, 636, 853, 989, 990, 992, 993, 994, 995, 5061, 6697, 8443})
MAX_HEADER_BYTES = 32 << 10  # an endless header stops here
MAX_HEADERS = 100


class ScriptError(Exception):
    """A script could not finish: the engine writes an error row with this message."""


class BudgetExceeded(ScriptError):
    """The run read more than its byte budget."""


def tls_context() -> ssl.SSLContext:
    """Any certificate, any old protocol: a scanner looks, it does not trust."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    except (ssl.SSLError, ValueError):
        pass
    return ctx


class Budget:
    """A run's deadline (monotonic) and its bytes left, shared by its connections."""

    def __init__(self, timeout: float, max_bytes: int) -> None:
        self.deadline = time.monotonic() + timeout
        self.max_bytes = max_bytes
        self.read = 0

    def left(self, want: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the script's time budget is spent")
        return min(want, left)

    def count(self, n: int) -> None:
        self.read += n
        if self.read > self.max_bytes:
            raise BudgetExceeded(f"read more than its byte budget ({self.max_bytes:,} bytes)")


class Conn:
    """One TCP (or TLS) connection of a script; every read is capped and timed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 budget: Budget, io_timeout: float) -> None:  # fmt: skip
        self._r, self._w, self._budget, self.io_timeout = reader, writer, budget, io_timeout
        self._pending = bytearray()  # read past a recv_until separator

    async def send(self, data: bytes) -> None:
        self._w.write(data)
        await asyncio.wait_for(self._w.drain(), self._budget.left(self.io_timeout))

    async def recv(self, n: int = 4096, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes as they come (b"" at EOF); TimeoutError after ``timeout``."""
        if self._pending:
            data, self._pending = bytes(self._pending[:n]), self._pending[n:]
            return data
        wait = self._budget.left(self.io_timeout if timeout is None else timeout)
        data = await asyncio.wait_for(self._r.read(n), wait)
        self._budget.count(len(data))
        return data

    async def recv_until(self, sep: bytes, limit: int = 8192,
                         timeout: float | None = None) -> bytes:  # fmt: skip
        """Bytes up to and including ``sep``; at most ``limit`` (then what came, cut), or
        what came before EOF. What came after ``sep`` is kept for the next read."""
        wait = self._budget.left(self.io_timeout if timeout is None else timeout)
        end = time.monotonic() + wait
        buf, self._pending = self._pending, bytearray()
        while sep not in buf and len(buf) < limit:
            chunk = await asyncio.wait_for(self._r.read(max(1, limit - len(buf))),
                                           max(0.0, end - time.monotonic()))  # fmt: skip
            if not chunk:
                break
            self._budget.count(len(chunk))
            buf += chunk
        i = buf.find(sep)
        if 0 <= i < limit:
            self._pending = buf[i + len(sep):]
            return bytes(buf[: i + len(sep)])
        self._pending = buf[limit:]
        return bytes(buf[:limit])

    async def recv_line(self, limit: int = 8192, timeout: float | None = None) -> bytes:
        return await self.recv_until(b"\n", limit, timeout)

    async def start_tls(self, server_hostname: str | None = None) -> None:
        """Upgrade to TLS (STARTTLS); the handshake has the read timeout."""
        await self._w.start_tls(tls_context(), server_hostname=server_hostname,
                                ssl_handshake_timeout=self._budget.left(self.io_timeout))

    def peer_cert(self) -> bytes | None:
        """The server's certificate, DER, when the connection is TLS."""
        obj = self._w.get_extra_info("ssl_object")
        return obj.getpeercert(binary_form=True) if obj is not None else None

    def tls_info(self) -> tuple[str | None, str | None]:
        """(protocol version, cipher name) of a TLS connection, else (None, None)."""
        obj = self._w.get_extra_info("ssl_object")
        if obj is None:
            return None, None
        cipher = obj.cipher()
        return obj.version(), cipher[0] if cipher else None

    async def close(self) -> None:
        # abort(), not close(): no waiting on a TLS close_notify a hostile peer never
        # answers; a scanner has nothing left to say.
        self._w.transport.abort()

    async def __aenter__(self) -> Conn:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass(frozen=True)
class HttpResponse:
    """An HTTP reply: headers in order as sent (names as sent), body cut at ``max_body``."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    truncated: bool = False  # the body (or headers) went past the caps

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    def header_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]


class Context:
    """Handed to ``Script.run``: the target, the arguments, and the bounded helpers."""

    def __init__(self, target: Target, script_id: str, args: Mapping[str, str],
                 budget: Budget, *, io_timeout: float = 5.0) -> None:  # fmt: skip
        self.target = target
        self.script_id = script_id
        self.args = dict(args)
        self.budget = budget
        self.io_timeout = io_timeout
        #: The host's open ports (a host script's view of what is there).
        self.open_ports: tuple[Target, ...] = ()
        #: nmap's verbosity as this script sees it: 1 when it was selected by name (nmap
        #: raises a named script's verbosity by one), else 0. Some outputs depend on it.
        self.verbosity = 0
        #: GET replies shared with the scan's other runs (``httpcache``); None: not shared.
        self.http_cache: HttpCache | None = None
        self._conns: list[Conn] = []

    # -- the target ----------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.target.host

    @property
    def port(self) -> int | None:
        return self.target.port

    @property
    def service(self) -> Target:
        """-sV's result for the port (name, product, version, extrainfo, tunnel, banner)."""
        return self.target

    @property
    def tls(self) -> bool:
        """Whether the port speaks TLS first: -sV said so, or (without -sV) its number."""
        t = self.target
        if t.tunnel == "ssl" or t.service in ("https", "ssl"):
            return True
        return t.service is None and t.port in TLS_PORTS

    def time_left(self) -> float:
        """Seconds left of this run's time budget."""
        return max(0.0, self.budget.deadline - time.monotonic())

    def arg(self, key: str, default: str | None = None) -> str | None:
        """``--script-args`` value of ``<id>.key``, else of ``key``, else ``default``."""
        return self.args.get(f"{self.script_id}.{key}", self.args.get(key, default))

    # -- connections ---------------------------------------------------------------------
    async def connect(self, port: int | None = None, *, tls: bool | None = None,
                      timeout: float | None = None) -> Conn:  # fmt: skip
        """A connection to the target's ``port`` (default: the script's port)."""
        p = self.target.port if port is None else port
        if p is None:
            raise ScriptError("connect() needs a port in a host script")
        use_tls = self.tls if tls is None and port is None else bool(tls)
        wait = self.budget.left(self.io_timeout if timeout is None else timeout)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            self.target.host, p, ssl=tls_context() if use_tls else None,
            server_hostname="" if use_tls else None, limit=64 << 10,
            ssl_handshake_timeout=wait if use_tls else None,
        ), wait)  # fmt: skip
        conn = Conn(reader, writer, self.budget, self.io_timeout)
        self._conns.append(conn)
        return conn

    async def http(self, method: str = "GET", path: str = "/", *,
                   headers: Sequence[tuple[str, str]] | Mapping[str, str] = (),
                   body: bytes = b"", max_body: int = 256 << 10,
                   port: int | None = None, tls: bool | None = None) -> HttpResponse:  # fmt: skip
        """One HTTP/1.1 request on a new connection; the reply's body is cut at
        ``max_body``. Headers over 32 KiB or 100 lines: the reply is kept as it stands
        (``truncated``)."""
        from prtip_nb.nse import _http

        extra = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        p = self.target.port if port is None else port
        use_tls = self.tls if tls is None else tls

        async def fetch(cap: int) -> HttpResponse:
            conn = await self.connect(port, tls=tls)
            try:
                host = self.target.host
                hp = f"[{host}]" if ":" in host else host
                default = 443 if use_tls else 80
                await conn.send(_http.request(method, path, hp if p == default else f"{hp}:{p}",
                                              extra, body))  # fmt: skip
                return await _http.read_response(conn, method, cap)
            finally:
                await conn.close()

        if self.http_cache is None or method != "GET" or body or extra or p is None:
            return await fetch(max_body)
        return await self.http_cache.get((self.target.host, p, bool(use_tls), path), max_body,
                                         fetch)  # fmt: skip

    async def close_all(self) -> None:
        for c in self._conns:
            await c.close()
        self._conns.clear()

    def __repr__(self) -> str:
        return f"<Context {self.script_id} {self.target.host}:{self.target.port}>"


