"""Hostile lab services: what a service scanner must survive, each with a known bound.

- ``endless``: a banner that never ends (16 KiB writes as fast as the client reads);
- ``slow``: one byte per second;
- ``bigchain``: TLS with a ~1 MiB certificate chain (16 padding certificates of 64 KiB);
- ``wrapped``: accepts and closes at once, as a TCP wrapper does (nmap's "tcpwrapped");
- ``redos``: text crafted against naive regexes (``REDOS_PAYLOAD``), then silence;
- ``regexbomb``: 4 KiB crafted against named slow rules of nmap's probe database
  (``BOMBS``), sent at once on every connection, then silence. The n-th regexbomb port
  sends the n-th bomb (round robin); ``HostileServer.bombs`` says which port sends which.

They run on their own asyncio loop in a daemon thread (the lab's selector loop has no
timers, and ``slow`` needs one). Sockets are bound in the caller's thread, so a busy port
raises there. Every handler is bounded too (``MAX_*``): a forgotten lab does not run forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence

from prtip_nb.lab.services import bind

KINDS = ("endless", "slow", "bigchain", "wrapped", "redos", "regexbomb")
CHUNK = b"".join(b"ENDLESS-%05d " % i for i in range(1200))[:16384]
SLOW_TEXT = b"220 slow service, one byte per second\r\n"
MAX_ENDLESS = 256 * 1024 * 1024  # bytes per connection
MAX_SLOW_S = 120.0
HOLD_S = 30.0  # redos/bigchain: how long a connection may stay open after the payload
PAD_CERTS, PAD_BYTES = 16, 64 * 1024

#: Inputs that make backtracking regexes explode: a plausible start ("HTTP/1.1", "220",
#: "SSH-"), then long runs that almost match ``(\\w+\\s?)*$``, ``(a+)+b``, ``(.*\\r\\n)*X``,
#: ``\\d+\\w*X`` and friends, and never the character that would end the search.
REDOS_PAYLOAD = (
    b"HTTP/1.1 200 OK\r\nServer: " + b"a" * 1500 + b"\r\n"
    + b"X-Pad: " + b"a " * 600 + b"\r\n"
    + b"X-Digits: " + b"1" * 600 + b"\r\n"
    + b"\r\n" * 200 + b"!"
    + b"220 " + b"a" * 2000 + b"!"
    + b"SSH-2.0-" + b"1." * 1000 + b"\x00"
)  # fmt: skip


BOMB_SIZE = 4096  # what the service matcher looks at of a reply (servicedb.REGEX_WINDOW)


def _bomb(head: bytes, unit: bytes) -> bytes:
    return (head + unit * (BOMB_SIZE // len(unit) + 1))[:BOMB_SIZE]


#: Replies made for rules of nmap's nmap-service-probes (7.93) that backtrack polynomially,
#: keyed by a piece of the rule's pattern that finds it in the installed file (the rules
#: themselves are never copied here). A run of the rule's later literals, never its end:
#: every ``.*`` tries every split. Measured per 4 KiB reply, one search: with ``re`` (the
#: matcher before ``regex``) 270 ms (ANGLESTATUS, lines 281-282), 146 ms (VMware, line
#: 13459, SSLSessionReq); with ``regex`` the two ``*nntp[``/``*imap[`` softmatches (lines
#: 2347, 1767) are the slowest at 45 and 22 ms, past the matcher's 20 ms timeout.
BOMBS = {
    "ANGLESTATUS": _bomb(b"[ANGLESTATUS", b"[XYZSTATUS[ZOOMSTATUS[INSTRUMENTSTATUS"),
    "VMware Management Interface": _bomb(b"\x16\x03\x00\x00*\x02\x00\x00&\x03",
                                         b"\nCalifornia\tPalo Alto\x0cVMware, Inc."),
    "]*nntp[": _bomb(b"200 ", b"nntp"),
    "]*imap[": _bomb(b"* OK a ", b"imap "),
}  # fmt: skip


def _bigchain_context(host: str) -> ssl.SSLContext:
    import datetime as dt
    import os
    import secrets
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ObjectIdentifier

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    pem = []
    for i in range(PAD_CERTS + 1):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bigchain-{i}.lab.test")])
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(secrets.randbits(63) + 1)
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
        )  # fmt: skip
        if i:  # padding: an unknown, non-critical extension that OpenSSL carries along
            pad = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"),
                                             b"\x04\x83" + PAD_BYTES.to_bytes(3, "big")
                                             + b"P" * PAD_BYTES)  # fmt: skip
            builder = builder.add_extension(pad, critical=False)
        pem.append(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="prtip-bigchain-") as tmp:
        chain, keyfile = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        with open(chain, "wb") as f:
            f.write(b"".join(pem))
        with open(keyfile, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))  # fmt: skip
        ctx.load_cert_chain(chain, keyfile)
    return ctx


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def _endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sent = 0
    with contextlib.suppress(Exception):
        while sent < MAX_ENDLESS and not writer.is_closing():
            writer.write(CHUNK)
            await writer.drain()
            sent += len(CHUNK)
    await _close(writer)


async def _slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        for i in range(int(MAX_SLOW_S)):
            writer.write(SLOW_TEXT[i % len(SLOW_TEXT) : i % len(SLOW_TEXT) + 1])
            await writer.drain()
            await asyncio.sleep(1.0)
    await _close(writer)


async def _wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _close(writer)


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                payload: bytes = b"") -> None:  # fmt: skip
    with contextlib.suppress(Exception):
        if payload:
            writer.write(payload)
            await writer.drain()
        async with asyncio.timeout(HOLD_S):
            while await reader.read(4096):  # drain whatever the client says, until it goes
                pass
    await _close(writer)


async def _redos(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _hold(reader, writer, REDOS_PAYLOAD)


_HANDLERS = {"endless": _endless, "slow": _slow, "wrapped": _wrapped, "redos": _redos,
             "bigchain": _hold, "regexbomb": _hold}  # fmt: skip


class HostileServer:
    """Hostile services on ``host``; ``layout`` maps a kind to a port (0: kernel-picked) or
    to a list of ports. ``ports`` lists (kind, port) once started."""

    def __init__(self, host: str, layout: Mapping[str, int | Sequence[int]]) -> None:
        unknown = set(layout) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown hostile services {sorted(unknown)}; known: {KINDS}")
        self.host = host
        self.layout = {k: [v] if isinstance(v, int) else list(v) for k, v in layout.items()}
        self.ports: list[tuple[str, int]] = []
        self.bombs: dict[int, str] = {}  # regexbomb port -> the BOMBS key it sends
        self._socks: list[tuple[str, socket.socket]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> HostileServer:
        try:
            for kind, ports in self.layout.items():
                for port in ports:
                    sock = bind(self.host, port, "tcp")
                    self._socks.append((kind, sock))
                    bound = sock.getsockname()[1]
                    self.ports.append((kind, bound))
                    if kind == "regexbomb":
                        self.bombs[bound] = list(BOMBS)[len(self.bombs) % len(BOMBS)]
            tls = _bigchain_context(self.host) if "bigchain" in self.layout else None
        except BaseException:
            for _, sock in self._socks:
                sock.close()
            raise
        self._thread = threading.Thread(target=self._main, args=(tls,), daemon=True,
                                        name=f"prtip-lab hostile {self.host}")  # fmt: skip
        self._thread.start()
        self._ready.wait(10.0)
        return self

    def _main(self, tls: ssl.SSLContext | None) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        # A client that aborts a handshake (as a scanner must, on the big chain) is not news.
        loop.set_exception_handler(lambda _loop, _ctx: None)
        servers = []
        for kind, sock in self._socks:
            ctx = tls if kind == "bigchain" else None
            handler = _HANDLERS[kind]
            if kind == "regexbomb":
                handler = functools.partial(_hold, payload=BOMBS[self.bombs[sock.getsockname()[1]]])
            servers.append(loop.run_until_complete(
                asyncio.start_server(handler, sock=sock, ssl=ctx, backlog=4096,
                                     ssl_handshake_timeout=10.0 if ctx else None)))  # fmt: skip
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for server in servers:
                server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def stop(self, timeout: float = 2.0) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        for _, sock in self._socks:
            sock.close()
