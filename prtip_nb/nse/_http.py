"""The small HTTP/1.1 client behind ``ctx.http`` (RFC 9112: message syntax and framing).

One request per connection (``Connection: close``), so a reply ends at its Content-Length,
at the last chunk, or at EOF; whichever comes first, and never past ``max_body``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prtip_nb.nse.context import MAX_HEADER_BYTES, MAX_HEADERS, HttpResponse, ScriptError

if TYPE_CHECKING:
    from prtip_nb.nse.context import Conn

USER_AGENT = "Mozilla/5.0 (compatible; prtip_nb scripting engine)"


def request(method: str, path: str, host: str, headers: list[tuple[str, str]],
            body: bytes) -> bytes:  # fmt: skip
    if any(c in method + path for c in "\r\n ") or not method:
        raise ScriptError(f"bad HTTP request line: {method!r} {path!r}")
    names = {k.lower() for k, _ in headers}
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    if "connection" not in names:
        lines.append("Connection: close")
    if body and "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(conn: Conn, method: str, max_body: int) -> HttpResponse:
    status_line = (await conn.recv_line(MAX_HEADER_BYTES)).decode("latin-1").rstrip("\r\n")
    if not status_line:  # closed without a word (a tcpwrapped port): no reply, no error
        raise ConnectionResetError("the server closed the connection without a reply")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ScriptError(f"not an HTTP reply: {status_line[:80]!r}")
    version, status, reason = parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""
    headers: list[tuple[str, str]] = []
    size, truncated = len(status_line), False
    while True:
        line = await conn.recv_line(MAX_HEADER_BYTES)
        size += len(line)
        if not line.endswith(b"\n"):  # EOF, or a header line past the cap
            truncated = bool(line)
            break
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        if size > MAX_HEADER_BYTES or len(headers) >= MAX_HEADERS:
            truncated = True  # an endless header: keep what came, read no body
            break
        if text[0] in " \t" and headers:  # obsolete line folding
            k, v = headers[-1]
            headers[-1] = (k, f"{v} {text.strip()}")
            continue
        name, _, value = text.partition(":")
        headers.append((name.strip(), value.strip()))
    resp = HttpResponse(version, status, reason, headers, b"", truncated)
    if truncated or method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return resp
    body, cut = await _body(conn, resp, max_body)
    return HttpResponse(version, status, reason, headers, body, cut)


async def _body(conn: Conn, resp: HttpResponse, max_body: int) -> tuple[bytes, bool]:
    te = (resp.header("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        return await _chunked(conn, max_body)
    length = resp.header("Content-Length")
    want = int(length) if length and length.strip().isdigit() else None
    buf = bytearray()
    cap = max_body if want is None else min(want, max_body)
    while len(buf) < cap:
        chunk = await conn.recv(min(65536, cap - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf), len(buf) >= max_body and (want is None or want > max_body)


async def _chunked(conn: Conn, max_body: int) -> tuple[bytes, bool]:
    buf = bytearray()
    while len(buf) < max_body:
        line = (await conn.recv_line(1024)).split(b";")[0].strip()
        try:
            size = int(line, 16)
        except ValueError:
            break
        if size == 0:
            return bytes(buf), False
        take = min(size, max_body - len(buf))
        while take > 0:
            chunk = await conn.recv(min(65536, take))
            if not chunk:
                return bytes(buf), False
            buf += chunk
            take -= len(chunk)
        if len(buf) >= max_body:
            return bytes(buf), True
        await conn.recv_line(16)  # the CRLF after the chunk
    return bytes(buf), True
