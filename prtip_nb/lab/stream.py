"""A non-blocking connection for the lab's event loop: output buffer, TLS, lingering close.

Subclasses speak a protocol through four hooks: ``on_open`` (connected, and the TLS handshake
done if any), ``on_data``, ``on_eof``, and ``send``/``finish`` to answer and hang up.

TLS runs inside the loop: the handshake is ``do_handshake()`` retried on each readiness
event, and ``SSLWantReadError``/``SSLWantWriteError`` say which event to wait for next. A
TLS read can leave decrypted bytes inside OpenSSL that the selector cannot see, so reads
repeat until the socket says it would block.
"""

from __future__ import annotations

import socket
import ssl

from prtip_nb.lab.loop import READ, WRITE, EventLoop

#: Reads and writes per readiness event, so one chatty peer cannot hold the loop.
IO_BATCH = 16
RECV_SIZE = 16384
#: After our answer: how long we wait for the peer to close before we close anyway.
LINGER_S = 2.0


class Stream:
    """One accepted TCP connection, optionally wrapped in server-side TLS."""

    def __init__(
        self, loop: EventLoop, sock: socket.socket, *, tls: ssl.SSLContext | None = None
    ) -> None:
        sock.setblocking(False)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.loop = loop
        self.sock = sock
        self.closed = False
        self._out = bytearray()
        self._handshaking = tls is not None
        self._want_write = False  # OpenSSL must write before it can go on
        self._finishing = False  # close once the output buffer is empty
        self._draining = False  # answer sent, write side shut: discard input until EOF
        self._events = READ

    # -- the protocol's side ------------------------------------------------------------

    def on_open(self) -> None:
        """Connected (and handshaken): a service that speaks first sends its banner here."""

    def on_data(self, data: bytes) -> None:
        """Bytes from the peer."""

    def on_eof(self) -> None:
        """The peer closed its write side. By default we hang up too."""
        self.close()

    def send(self, data: bytes) -> None:
        if self.closed or self._finishing:
            return
        self._out += data
        self._flush()

    def finish(self) -> None:
        """Hang up after everything queued has been sent."""
        if self.closed:
            return
        self._finishing = True
        self._flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.close(self)

    # -- the loop's side ----------------------------------------------------------------

    def start(self) -> None:
        self.loop.add(self, READ, idle=True)
        try:
            if not self._handshaking:
                self.on_open()
            else:
                self._handshake()
        except BaseException:
            self.close()  # unregister before the fd goes, or the selector keeps a stale key
            raise

    def on_event(self, mask: int) -> None:
        self._want_write = False
        if self._handshaking:
            self._handshake()
            if self._handshaking or self.closed:
                return
        if self._out:
            self._flush()
        # Read even on a write event: a TLS read may have been waiting for that write.
        if not self.closed:
            self._read()
        if not self.closed:
            self._update()

    def _handshake(self) -> None:
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._update()
            return
        except ssl.SSLWantWriteError:
            self._want_write = True
            self._update()
            return
        except OSError:  # SSLError included: a plain-text probe, a scanner that hung up, ...
            self.close()
            return
        self._handshaking = False
        self.loop.touch(self)
        self.on_open()
        if not self.closed:
            self._update()

    def _read(self) -> None:
        for _ in range(IO_BATCH):
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                self._want_write = True
                return
            except OSError:  # reset by peer, TLS alert, ...
                self.close()
                return
            if not data:
                if self._draining:
                    self.close()
                else:
                    self.on_eof()
                return
            self.loop.touch(self, LINGER_S if self._draining else None)
            if not self._draining:
                self.on_data(data)
            if self.closed:
                return

    def _flush(self) -> None:
        for _ in range(IO_BATCH):
            if not self._out:
                break
            try:
                n = self.sock.send(self._out)
            except (BlockingIOError, ssl.SSLWantWriteError):
                break
            except ssl.SSLWantReadError:  # renegotiation: needs the peer first
                break
            except OSError:
                self.close()
                return
            del self._out[:n]
        if not self._out and self._finishing and not self._draining:
            self._linger()
        if not self.closed:
            self._update()

    def _linger(self) -> None:
        # Closing a socket that still holds unread input makes the kernel send RST, and an
        # RST can overtake our answer at the client. So: shut our write side (the client
        # reads EOF after the answer) and discard input until the client closes.
        self._draining = True
        if isinstance(self.sock, ssl.SSLSocket):
            try:
                self.sock.unwrap()  # sends close_notify; on a non-blocking socket it then
            except OSError:  # raises WantRead while waiting for the peer's: that's fine
                pass
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.loop.touch(self, LINGER_S)

    def _update(self) -> None:
        events = READ | (WRITE if (self._out or self._want_write) else 0)
        if events != self._events and not self.closed:
            self._events = events
            self.loop.modify(self, events)
