"""One selector, one daemon thread: the event loop every lab service runs on.

A thread per connection would cost a stack (8 MiB of address space, real pages on first
touch) and a context switch per event; a scan of the lab opens thousands of connections in a
burst. Here a connection costs one socket and one small Python object.

Threading contract: sockets are registered before ``start()``; after that only the loop
thread touches the selector. ``stop()`` is the one cross-thread call: it sets a flag and
writes one byte to a wake-up socketpair, so the loop notices at once instead of at its next
select timeout. The loop thread closes every socket it owns on its way out.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

#: Accepts per readiness event: enough to drain a SYN burst quickly, few enough that one busy
#: listener cannot starve the other sockets on the loop.
ACCEPT_BATCH = 256
#: How long an accept that failed with EMFILE pauses its listener. Without the pause the
#: listener stays readable and the loop would spin on it.
EMFILE_PAUSE_S = 0.1
#: Select timeout; bounds how late idle connections are swept.
TICK_S = 0.25


class Handler(Protocol):
    """Anything the loop can watch: a socket plus a callback for its readiness events."""

    sock: socket.socket

    def on_event(self, mask: int) -> None: ...


class EventLoop:
    """Run handlers on one background daemon thread until ``stop()``."""

    def __init__(self, *, name: str = "prtip-lab", idle_timeout: float = 30.0) -> None:
        self.name = name
        self.idle_timeout = idle_timeout
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, READ, None)
        self._deadlines: dict[Handler, float] = {}  # connections only, not listeners
        self._paused: list[tuple[float, Handler]] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- registration (before start, or from the loop thread) ---------------------------

    def add(self, handler: Handler, events: int = READ, *, idle: bool = False) -> None:
        """Watch ``handler``. ``idle=True`` marks a connection that the idle sweep may close."""
        self._sel.register(handler.sock, events, handler)
        if idle:
            self._deadlines[handler] = time.monotonic() + self.idle_timeout

    def modify(self, handler: Handler, events: int) -> None:
        self._sel.modify(handler.sock, events, handler)

    def touch(self, handler: Handler, timeout: float | None = None) -> None:
        """Push back the idle deadline of a connection that just did something."""
        if handler in self._deadlines:
            t = self.idle_timeout if timeout is None else timeout
            self._deadlines[handler] = time.monotonic() + t

    def close(self, handler: Handler) -> None:
        """Forget and close a handler's socket. Safe to call twice."""
        self._deadlines.pop(handler, None)
        try:
            self._sel.unregister(handler.sock)
        except (KeyError, ValueError):  # already gone, or the fd is already closed
            pass
        handler.sock.close()

    def pause(self, handler: Handler, seconds: float = EMFILE_PAUSE_S) -> None:
        """Stop watching ``handler`` for a while (a listener out of file descriptors)."""
        self._sel.unregister(handler.sock)
        self._paused.append((time.monotonic() + seconds, handler))

    @property
    def connections(self) -> int:
        """Open connections (not listeners); read from any thread as a rough gauge."""
        return len(self._deadlines)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the loop, close every socket, join the thread. True if it ended in time."""
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:  # the buffer is full (already woken) or the pair is closed
            pass
        if self._thread is None:
            self._close_all()  # never started: nothing else will close the sockets
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            next_sweep = time.monotonic() + TICK_S
            while not self._stopping.is_set():
                for key, mask in self._sel.select(TICK_S):
                    if key.data is None:  # the wake-up pair: stop() was called
                        continue
                    handler: Handler = key.data
                    try:
                        handler.on_event(mask)
                    except Exception:  # one bad peer must not end the lab
                        self.close(handler)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + TICK_S
        finally:
            self._close_all()

    def _sweep(self, now: float) -> None:
        for handler, deadline in list(self._deadlines.items()):
            if deadline <= now:
                self.close(handler)
        if self._paused:
            due = [h for t, h in self._paused if t <= now]
            self._paused = [(t, h) for t, h in self._paused if t > now]
            for handler in due:
                self._sel.register(handler.sock, READ, handler)

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        for key in list(self._sel.get_map().values()):
            sock = key.fileobj
            if isinstance(sock, socket.socket):
                sock.close()
        for _, handler in self._paused:
            handler.sock.close()
        self._paused.clear()
        self._deadlines.clear()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()


class Listener:
    """A listening TCP socket; hands every accepted socket to ``factory``."""

    def __init__(
        self, loop: EventLoop, sock: socket.socket, factory: Callable[[socket.socket], None]
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        sock.setblocking(False)

    def on_event(self, mask: int) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.loop.pause(self)
                    return
                # ECONNABORTED, EPROTO, ...: that one connection failed; the listener is fine,
                # and raising would make the loop close it.
                continue
            try:
                self.factory(conn)
            except Exception:  # that connection failed; the listener must live on
                conn.close()
