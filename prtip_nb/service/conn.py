"""One probe connection on asyncio: plain TCP, or TLS run by hand over memory BIOs.

TLS goes through ``ssl.MemoryBIO`` rather than ``loop.start_tls`` because the engine must
see every byte the peer sends during the handshake: a certificate chain is bounded by
counting them (``MAX_HANDSHAKE_BYTES``) and aborting, not by trusting OpenSSL's limits.
The socket calls are the loop's low-level ones (``sock_connect``/``sock_recv``): no
transports, no stream buffers that a peer could fill.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

#: A handshake that brings more than this is aborted (the issue's "chains over 100 kB").
MAX_HANDSHAKE_BYTES = 100_000
RECV_SIZE = 16384
_LINGER_RST = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0


class ChainTooLarge(Exception):
    """The peer sent more than MAX_HANDSHAKE_BYTES before the handshake completed."""


class Conn:
    """A non-blocking client socket; ``handshake()`` turns it into a TLS connection."""

    def __init__(self, family: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.tls: ssl.SSLObject | None = None
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self.handshake_bytes = 0

    async def connect(self, host: str, port: int) -> None:
        await self.loop.sock_connect(self.sock, (host, port))
        # A connect to 127.0.0.1 can be handed its own port as source and "succeed" on a
        # simultaneous open with itself: that is no service.
        if self.sock.getsockname()[:2] == self.sock.getpeername()[:2]:
            raise ConnectionRefusedError("connected to itself")

    async def handshake(self, ctx: ssl.SSLContext, limit: int = MAX_HANDSHAKE_BYTES) -> None:
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(self._in, self._out, server_side=False)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                raw = await self.loop.sock_recv(self.sock, RECV_SIZE)
                if not raw:
                    raise ConnectionResetError("closed during the TLS handshake") from None
                self.handshake_bytes += len(raw)
                if self.handshake_bytes > limit:
                    raise ChainTooLarge(f"handshake over {limit} bytes") from None
                self._in.write(raw)
        await self._flush()
        self.tls = obj

    async def _flush(self) -> None:
        assert self._out is not None
        data = self._out.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def send(self, data: bytes) -> None:
        if self.tls is None:
            await self.loop.sock_sendall(self.sock, data)
            return
        self.tls.write(data)
        await self._flush()

    async def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes of the peer's data; b"" at end of stream (or TLS close)."""
        if self.tls is None:
            return await self.loop.sock_recv(self.sock, size)
        assert self._in is not None
        while True:
            try:
                return self.tls.read(size)
            except ssl.SSLWantReadError:
                await self._flush()  # TLS 1.3 may have to answer (key update) before reading
                raw = await self.loop.sock_recv(self.sock, RECV_SIZE)
                if not raw:
                    self._in.write_eof()
                    continue
                self._in.write(raw)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def close(self) -> None:
        try:
            # RST instead of FIN: nothing is left in TIME_WAIT after a scan of many ports.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
        self.sock.close()
