"""One GET per page per scan: the scripts' shared HTTP cache (``ctx.http``).

http-title, http-server-header and http-favicon (and a user's scripts) ask a port for the
same pages: without sharing, a web server sees ``GET /`` once per script. The engine
gives every run of one ``run_async`` the same :class:`HttpCache`, keyed by (host, port,
TLS, path); a plain GET (no body, no headers of the script's own) goes through it.

SINGLE FLIGHT. The first asker fetches, on its own connection and within its own budget;
askers that come while it runs wait for that reply instead of sending theirs. If the
fetch ends without a reply (its script's time or byte budget ran out, or it was
cancelled), nothing is kept and a waiter fetches for itself: one script's small budget
never fails another's run. A reply that is not HTTP is kept as that error: asking again
would get the same bytes.

Replies are fetched with the larger of the asker's ``max_body`` and ``FETCH_BODY``, so a
later asker wanting the body is served by a fetch made for the headers; each asker gets
the body cut at its own ``max_body``. At most ``MAX_BYTES`` of bodies are kept: past it,
a reply goes to the askers already waiting and is not stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

from prtip_nb.nse.context import HttpResponse, ScriptError

FETCH_BODY = 256 << 10  # ctx.http's default max_body
MAX_BYTES = 16 << 20

Key = tuple[str, int, bool, str]


class HttpCache:
    """GET replies by (host, port, tls, path), shared by a scan's script runs."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._entries: dict[Key, asyncio.Future[HttpResponse | BaseException | None]] = {}
        self.max_bytes = max_bytes
        self.bytes = 0
        self.fetches = 0  # requests sent
        self.hits = 0  # asks served without one

    async def get(self, key: Key, max_body: int,
                  fetch: Callable[[int], Awaitable[HttpResponse]]) -> HttpResponse:  # fmt: skip
        """The reply for ``key``, body cut at ``max_body``; ``fetch(body_cap)`` sends."""
        while True:
            fut = self._entries.get(key)
            if fut is None:
                return _cut(await self._lead(key, max_body, fetch), max_body)
            # shield: a waiter's own timeout must not cancel what the others wait for
            got = await asyncio.shield(fut)
            if got is None:
                continue  # the fetch came to nothing: try for ourselves
            self.hits += 1
            if isinstance(got, BaseException):
                raise ScriptError(str(got))
            return _cut(got, max_body)

    async def _lead(self, key: Key, max_body: int,
                    fetch: Callable[[int], Awaitable[HttpResponse]]) -> HttpResponse:  # fmt: skip
        fut: asyncio.Future[HttpResponse | BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._entries[key] = fut
        self.fetches += 1
        try:
            r = await fetch(max(max_body, FETCH_BODY))
        except ScriptError as exc:
            if "not an HTTP reply" in str(exc):  # the same bytes every time: keep it
                fut.set_result(exc)
            else:
                del self._entries[key]
                fut.set_result(None)
            raise
        except BaseException:
            del self._entries[key]
            fut.set_result(None)  # waiters fetch for themselves
            raise
        fut.set_result(r)
        if self.bytes + len(r.body) > self.max_bytes:
            del self._entries[key]  # delivered to the waiters; not kept
        else:
            self.bytes += len(r.body)
        return r


def _cut(r: HttpResponse, max_body: int) -> HttpResponse:
    if len(r.body) <= max_body:
        return r
    return replace(r, body=r.body[:max_body], truncated=True)
