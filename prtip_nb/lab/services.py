"""The lab's services: what each one says, and what a scanner should conclude from it.

Every service runs on the one ``EventLoop`` (see ``loop.py``):

- ``tcp``: a plain listener. It accepts and closes at once, reading nothing. The kernel has
  completed the handshake before ``accept()`` returns, so a scanner already saw the port
  open; holding the connection would only cost a descriptor per probe. A service probe
  therefore sees EOF without a banner (nmap calls that "tcpwrapped").
- ``http``: answers any request with one ``200 OK`` page and closes.
- ``https``: the same behind TLS, with the lab's self-signed certificate.
- ``ssh``: the banner, then a real key exchange up to NEWKEYS (``sshkex``: the host key
  and the algorithms are there for ssh-hostkey and ssh2-enum-algos), then it hangs up.
- ``smtp``, ``ftp``: speak first with a well-known banner, then answer a few commands
  (enough for QUIT to end the session politely).
- ``udp_echo``: sends every datagram back to its sender.

``KINDS`` holds the ground truth of each kind (service, product, version, banner), in one
place with the bytes that produce it.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from prtip_nb.lab.loop import EventLoop, Listener
from prtip_nb.lab.sshkex import SshKex
from prtip_nb.lab.stream import Stream

LAB_DNS_NAME = "prtip-lab.test"  # the name in every banner and in the TLS certificate
SERVER_HEADER = "prtip-lab/1.0"
TITLE = "prtip_nb lab"
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 prtip-lab\r\n"
SMTP_BANNER = f"220 {LAB_DNS_NAME} ESMTP Postfix\r\n".encode()
FTP_BANNER = b"220 (vsFTPd 3.0.3)\r\n"

#: A request larger than this gets its answer anyway; the lab parses nothing of it.
MAX_REQUEST = 8192
MAX_LINE = 4096
UDP_BATCH = 64
#: Listen backlog; the kernel caps it at net.core.somaxconn (4096 by default since 5.4).
BACKLOG = 4096


@dataclass(frozen=True)
class Kind:
    """One kind of lab service and the ground truth a scanner should report for it."""

    name: str  # the Lab argument
    proto: str  # "tcp" or "udp"
    service: str | None
    product: str | None = None
    version: str | None = None
    extrainfo: str | None = None
    banner: str | None = None  # first line the service sends, without CRLF
    tls: bool = False


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("tcp", "tcp", None),
        Kind("http", "tcp", "http", "prtip-lab", "1.0"),
        # nmap's words for HTTP over TLS: service "http", tunnel "ssl" (truth.py adds it).
        Kind("https", "tcp", "http", "prtip-lab", "1.0", tls=True),
        Kind("ssh", "tcp", "ssh", "OpenSSH", "9.2p1", "protocol 2.0", SSH_BANNER.decode()[:-2]),
        Kind("smtp", "tcp", "smtp", "Postfix smtpd", None, None, SMTP_BANNER.decode()[:-2]),
        Kind("ftp", "tcp", "ftp", "vsftpd", "3.0.3", None, FTP_BANNER.decode()[:-2]),
        Kind("udp_echo", "udp", "echo"),
    )
}


def _http_response(head_only: bool) -> bytes:
    body = (
        "<!doctype html>\n<html><head><title>" + TITLE + "</title></head>\n"
        "<body><h1>" + TITLE + "</h1><p>A local target with known ground truth.</p></body>"
        "</html>\n"
    ).encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"Server: {SERVER_HEADER}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + body


_RESPONSE = _http_response(head_only=False)
_RESPONSE_HEAD = _http_response(head_only=True)


class HttpConn(Stream):
    """One request, one answer, close. Any bytes ending in a blank line count as a request."""

    def __init__(self, loop: EventLoop, sock: socket.socket, *, tls: ssl.SSLContext | None) -> None:
        super().__init__(loop, sock, tls=tls)
        self._buf = bytearray()
        self._answered = False

    def on_data(self, data: bytes) -> None:
        if self._answered:
            return
        self._buf += data
        if b"\r\n\r\n" in self._buf or b"\n\n" in self._buf or len(self._buf) >= MAX_REQUEST:
            self._answer()

    def on_eof(self) -> None:
        # A client that half-closes after its request can still read the answer.
        if self._buf and not self._answered:
            self._answer()
        else:
            self.close()

    def _answer(self) -> None:
        self._answered = True
        self.send(_RESPONSE_HEAD if self._buf.startswith(b"HEAD ") else _RESPONSE)
        self.finish()


class LineConn(Stream):
    """A service that speaks first, then answers line by line (``reply``)."""

    greeting = b""

    def __init__(self, loop: EventLoop, sock: socket.socket) -> None:
        super().__init__(loop, sock)
        self._buf = bytearray()

    def on_open(self) -> None:
        self.send(self.greeting)

    def on_data(self, data: bytes) -> None:
        self._buf += data
        for _ in range(64):  # a pipelining peer sends several commands per segment
            line, sep, rest = self._buf.partition(b"\n")
            if not sep:
                break
            self._buf = bytearray(rest)
            answer, hang_up = self.reply(bytes(line).strip())
            self.send(answer)
            if hang_up:
                self.finish()
                return
        if len(self._buf) > MAX_LINE:
            self.finish()

    def reply(self, line: bytes) -> tuple[bytes, bool]:
        """The answer to one line, and whether to hang up after it."""
        return b"", False


class SshConn(Stream):
    """SSH up to a real key exchange (``sshkex``): the banner, KEXINIT, an ECDH reply
    signed by the lab's Ed25519 host key, NEWKEYS; then the lab hangs up."""

    def __init__(self, loop: EventLoop, sock: socket.socket) -> None:
        super().__init__(loop, sock)
        self._kex = SshKex(SSH_BANNER)

    def on_open(self) -> None:
        self.send(self._kex.greeting)

    def on_data(self, data: bytes) -> None:
        answer, hang_up = self._kex.feed(data)
        if answer:
            self.send(answer)
        if hang_up:
            self.finish()


class SmtpConn(LineConn):
    greeting = SMTP_BANNER

    def reply(self, line: bytes) -> tuple[bytes, bool]:
        verb = line[:4].upper()
        if verb == b"EHLO":
            return (
                f"250-{LAB_DNS_NAME}\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                "250 8BITMIME\r\n".encode(),
                False,
            )
        if verb == b"HELO":
            return f"250 {LAB_DNS_NAME}\r\n".encode(), False
        if verb == b"QUIT":
            return b"221 2.0.0 Bye\r\n", True
        if verb in (b"NOOP", b"RSET"):
            return b"250 2.0.0 Ok\r\n", False
        return b"502 5.5.2 Error: command not recognized\r\n", False


class FtpConn(LineConn):
    greeting = FTP_BANNER

    def reply(self, line: bytes) -> tuple[bytes, bool]:
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"QUIT":
            return b"221 Goodbye.\r\n", True
        if verb == b"USER":
            return b"331 Please specify the password.\r\n", False
        if verb == b"PASS":
            return b"530 Login incorrect.\r\n", False
        if verb == b"SYST":
            return b"215 UNIX Type: L8\r\n", False
        return b"530 Please login with USER and PASS.\r\n", False


class UdpEcho:
    """Echo every datagram to its sender. A full send buffer drops the echo, as UDP may."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)

    def on_event(self, mask: int) -> None:
        for _ in range(UDP_BATCH):
            try:
                data, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:  # ICMP error queued from an earlier echo: not ours to report
                continue
            try:
                self.sock.sendto(data, addr)
            except OSError:
                pass


_LINE_CONNS: dict[str, type[Stream]] = {"ssh": SshConn, "smtp": SmtpConn, "ftp": FtpConn}


def serve(loop: EventLoop, kind: str, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
    """Register a bound socket of service ``kind`` on ``loop`` (before ``loop.start()``)."""
    if kind == "udp_echo":
        loop.add(UdpEcho(sock))
    elif kind == "tcp":
        loop.add(Listener(loop, sock, lambda conn: conn.close()))
    elif kind in ("http", "https"):
        ctx = tls if kind == "https" else None

        def http(conn: socket.socket) -> None:
            HttpConn(loop, conn, tls=ctx).start()

        loop.add(Listener(loop, sock, http))
    else:
        cls = _LINE_CONNS[kind]
        loop.add(Listener(loop, sock, lambda conn: cls(loop, conn).start()))


def bind(host: str, port: int, proto: str, *, listen: bool = True) -> socket.socket:
    """A socket bound to ``host``:``port`` (``proto`` "tcp" or "udp"); raises ``OSError``.

    IPv6 sockets are V6ONLY, so ``::`` takes only IPv6 and the lab binds only what it is
    told. SO_REUSEADDR lets a restarted lab reuse ports in TIME_WAIT; on Linux it never lets
    two listeners share a port, and it is left off for UDP and for the unlistened sockets
    that hold a port closed, where it would.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    stype = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    addr = socket.getaddrinfo(host, port, family, stype, 0, socket.AI_NUMERICHOST)[0][4]
    sock = socket.socket(family, stype)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if proto == "tcp" and listen:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        if proto == "tcp" and listen:
            sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock
