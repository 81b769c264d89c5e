"""Scripts for the text protocols: banner, FTP (RFC 959), SMTP (RFC 5321), Redis (RESP,
redis.io "INFO"), memcached (its protocol.txt, "stats")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prtip_nb.nse.api import Output, Script
from prtip_nb.nse.context import Conn, Context, ScriptError
from prtip_nb.service.text import escape_bytes

#: Services that wait for the client: a banner script only waits out its timeout there.
CLIENT_FIRST = frozenset({"http", "https", "redis", "memcached", "domain", "ipp", "http-proxy",
                          "mongodb", "postgresql", "ms-wbt-server", "ldap"})  # fmt: skip


class _Base(Script):
    def __init__(self) -> None:
        if self.__doc__:
            self.description = self.__doc__


class Banner(_Base):
    """What the service says first, unprompted (non-printable bytes as ``\\xNN``, the
    trailing line break dropped)::

        |_banner: 220 (vsFTPd 3.0.3)
        |_banner: SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10

    Waits ``banner.timeout`` seconds (default 5). Unlike nmap, it does not wait on a port
    where -sV named a service that never speaks first (http, redis, ...). No data.
    """

    id = "banner"
    categories = ("discovery", "safe")

    async def run(self, ctx: Context) -> Output | None:
        if ctx.service.service in CLIENT_FIRST:
            return None
        # Within the run's budget: a silent port is "no banner", not a timed-out script.
        wait = min(float(ctx.arg("timeout", "5") or 5), ctx.time_left() * 0.8)
        async with await ctx.connect() as conn:
            try:
                data = await conn.recv(2048, timeout=wait)
            except TimeoutError:
                return None
        data = data.rstrip(b"\r\n")
        return Output(escape_bytes(data, 1024)) if data else None


async def _reply(conn: Conn) -> tuple[int, list[str]]:
    """One FTP/SMTP reply: its code and its lines without the code (RFC 5321 4.2)."""
    lines: list[str] = []
    for _ in range(200):
        raw = await conn.recv_line(4096)
        if not raw:
            break
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit():
            raise ScriptError(f"not a reply line: {line[:60]!r}")
        lines.append(line[4:])
        if len(line) == 3 or line[3] == " ":
            return int(line[:3]), lines
    if not lines:
        raise ScriptError("the server closed the connection")
    return int(raw[:3]), lines


class FtpAnon(_Base):
    """Whether the FTP server lets ``anonymous`` in (RFC 959 USER/PASS, RFC 1635), and
    the root listing (LIST over PASV, at most ``ftp-anon.maxlist`` lines, default 20)::

        | ftp-anon: Anonymous FTP login allowed (FTP code 230)
        |_-rw-r--r--    1 0        0              12 Dec 05 02:18 readme.txt

    Nothing when the login is refused. No data (nmap's neither).
    """

    id = "ftp-anon"
    categories = ("default", "auth", "safe")
    ports = (21,)
    services = ("ftp",)

    async def run(self, ctx: Context) -> Output | None:
        async with await ctx.connect() as conn:
            code, _ = await _reply(conn)
            if code != 220:
                return None
            await conn.send(b"USER anonymous\r\n")
            code, _ = await _reply(conn)
            if code == 331:
                await conn.send(b"PASS IEUser@\r\n")
                code, _ = await _reply(conn)
            if code not in (230, 202):
                return None
            text = f"Anonymous FTP login allowed (FTP code {code})"
            listing = await _list(ctx, conn, int(ctx.arg("maxlist", "20") or 20))
            return Output(text + "".join(f"\n{line}" for line in listing))


async def _list(ctx: Context, conn: Conn, maxlist: int) -> list[str]:
    await conn.send(b"PASV\r\n")
    code, lines = await _reply(conn)
    if code != 227:
        return [f"Can't get directory listing: PASV failed: {code} {' '.join(lines)}"]
    nums = [int(n) for n in "".join(c if c.isdigit() or c == "," else " " for c in lines[0])
            .split()[-1].split(",")]  # fmt: skip
    data = await ctx.connect((nums[4] << 8) | nums[5], tls=False)
    async with data:
        await conn.send(b"LIST\r\n")
        code, lines = await _reply(conn)
        if code not in (125, 150):
            return [f"Can't get directory listing: {code} {' '.join(lines)}"]
        out: list[str] = []
        while len(out) < maxlist:
            line = await data.recv_line(1024)
            if not line:
                break
            out.append(escape_bytes(line.rstrip(b"\r\n"), 256))
    return out


class SmtpCommands(_Base):
    """The server's EHLO extensions, then its HELP text (RFC 5321 4.1.1.1, 4.1.1.8)::

        | smtp-commands: vm Hello nmap.scanme.org [127.0.0.1], SIZE 52428800, 8BITMIME, ...
        |_ Commands supported: AUTH STARTTLS HELO EHLO MAIL RCPT DATA BDAT NOOP QUIT RSET HELP

    The EHLO name is ``smtp-commands.domain`` (or ``smtp.domain``; default
    ``prtip-nb.example``). No data (nmap's neither).
    """

    id = "smtp-commands"
    categories = ("default", "discovery", "safe")
    ports = (25, 465, 587)
    services = ("smtp", "smtps", "submission")

    async def run(self, ctx: Context) -> Output | None:
        domain = ctx.arg("domain") or ctx.args.get("smtp.domain") or "prtip-nb.example"
        async with await ctx.connect() as conn:
            code, _ = await _reply(conn)
            if code != 220:
                return None
            await conn.send(f"EHLO {domain}\r\n".encode())
            code, ehlo = await _reply(conn)
            if code != 250:
                return None
            text = ", ".join(ehlo)
            await conn.send(b"HELP\r\n")
            code, helped = await _reply(conn)
            if code in (211, 214):
                text += "\n " + " ".join(helped)
            await conn.send(b"QUIT\r\n")
            return Output(text)


def _human(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n}B"


class RedisInfo(_Base):
    """Facts from Redis's ``INFO``, ``CONFIG GET bind`` and ``CLIENT LIST``::

        | redis-info:
        |   Version: 7.0.15
        |   Operating System: Linux 6.1.0 x86_64
        |   Architecture: 64 bits
        |   Process ID: 9990
        |   Used CPU (sys): 0.011156
        |   Used CPU (user): 0.017387
        |   Connected clients: 2
        |   Connected slaves: 0
        |   Used memory: 936.74K
        |   Role: master
        |   Bind addresses:
        |     127.0.0.1
        |   Client connections:
        |_    127.0.0.1

    Data: the same keys (nmap's). A server that wants a password says so:
    ``Authentication required``.
    """

    id = "redis-info"
    categories = ("discovery", "safe")
    ports = (6379,)
    services = ("redis",)

    async def run(self, ctx: Context) -> Any:
        async with await ctx.connect() as conn:
            info = await _resp(conn, b"INFO\r\n")
            if isinstance(info, Exception):
                if "NOAUTH" in str(info):
                    return {"Authentication required": ""}
                raise ScriptError(str(info))
            fields = dict(line.split(":", 1) for line in str(info).splitlines() if ":" in line)
            names = [("Version", "redis_version"), ("Operating System", "os"),
                     ("Architecture", "arch_bits"), ("Process ID", "process_id"),
                     ("Used CPU (sys)", "used_cpu_sys"), ("Used CPU (user)", "used_cpu_user"),
                     ("Connected clients", "connected_clients"),
                     ("Connected slaves", "connected_slaves"),
                     ("Used memory", "used_memory_human"), ("Role", "role")]  # fmt: skip
            out: dict[str, Any] = {}
            for label, key in names:
                if key in fields:
                    value = fields[key].strip()
                    out[label] = f"{value} bits" if key == "arch_bits" else value
            bind = await _resp(conn, b"CONFIG GET bind\r\n")
            if isinstance(bind, list) and len(bind) == 2:
                out["Bind addresses"] = str(bind[1]).split()
            clients = await _resp(conn, b"CLIENT LIST\r\n")
            if isinstance(clients, str):
                addrs = [w.split("=", 1)[1].rsplit(":", 1)[0] for line in clients.splitlines()
                         for w in line.split() if w.startswith("addr=")]  # fmt: skip
                out["Client connections"] = list(dict.fromkeys(addrs))
            return out


async def _resp(conn: Conn, command: bytes) -> Any:
    """Send a command, read one RESP reply (a simple/bulk string, integer, array or error)."""
    await conn.send(command)
    return await _resp_value(conn, 0)


async def _resp_value(conn: Conn, depth: int) -> Any:
    line = (await conn.recv_line(65536)).rstrip(b"\r\n")
    if not line:
        raise ScriptError("the server closed the connection")
    kind, rest = line[:1], line[1:].decode("utf-8", "replace")
    if kind == b"+":
        return rest
    if kind == b"-":
        return ScriptError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        if n > 4 << 20:
            raise ScriptError(f"a {n}-byte reply is too big")
        buf = bytearray()
        while len(buf) < n + 2:
            chunk = await conn.recv(n + 2 - len(buf))
            if not chunk:
                break
            buf += chunk
        return bytes(buf[:n]).decode("utf-8", "replace")
    if kind == b"*" and depth < 4:
        return [await _resp_value(conn, depth + 1) for _ in range(min(int(rest), 1024))]
    raise ScriptError(f"not a RESP reply: {line[:40]!r}")


class MemcachedInfo(_Base):
    """Facts from memcached's ``stats`` (its protocol.txt)::

        | memcached-info:
        |   Process ID: 4252
        |   Uptime: 12 seconds
        |   Server time: 2026-12-05T02:40:01
        |   Architecture: 64 bit
        |   Used CPU (user): 0.002134
        |   Used CPU (system): 0.004531
        |   Current connections: 2
        |   Total connections: 3
        |   Maximum connections: 1024
        |   TCP Port: 11211
        |   UDP Port: 0
        |_  Authentication: no

    Data: the same keys.
    """

    id = "memcached-info"
    categories = ("discovery", "safe")
    ports = (11211,)
    services = ("memcached", "memcache")

    async def run(self, ctx: Context) -> Any:
        async with await ctx.connect() as conn:
            await conn.send(b"stats\r\n")
            stats: dict[str, str] = {}
            for _ in range(500):
                line = (await conn.recv_line(1024)).decode("utf-8", "replace").strip()
                if not line or line == "END" or line.startswith(("ERROR", "SERVER_ERROR")):
                    break
                parts = line.split(" ", 2)
                if len(parts) == 3 and parts[0] == "STAT":
                    stats[parts[1]] = parts[2]
            if not stats:
                return None
            await conn.send(b"stats settings\r\n")
            settings: dict[str, str] = {}
            for _ in range(500):
                line = (await conn.recv_line(1024)).decode("utf-8", "replace").strip()
                if not line or line == "END" or line.startswith(("ERROR", "SERVER_ERROR")):
                    break
                parts = line.split(" ", 2)
                if len(parts) == 3:
                    settings[parts[1]] = parts[2]
        out: dict[str, str] = {}

        def put(label: str, value: str | None) -> None:
            if value is not None:
                out[label] = value

        put("Process ID", stats.get("pid"))
        put("Uptime", f"{stats['uptime']} seconds" if "uptime" in stats else None)
        if stats.get("time", "").isdigit():
            t = datetime.fromtimestamp(int(stats["time"]), UTC)
            put("Server time", t.strftime("%Y-%m-%dT%H:%M:%S"))
        put("Architecture", f"{stats['pointer_size']} bit" if "pointer_size" in stats else None)
        put("Used CPU (user)", stats.get("rusage_user"))
        put("Used CPU (system)", stats.get("rusage_system"))
        put("Current connections", stats.get("curr_connections"))
        put("Total connections", stats.get("total_connections"))
        put("Maximum connections", settings.get("maxconns") or stats.get("max_connections"))
        put("TCP Port", settings.get("tcpport"))
        put("UDP Port", settings.get("udpport"))
        put("Authentication", "yes" if settings.get("auth_enabled_sasl") == "yes" else "no")
        return out


SCRIPTS = [Banner(), FtpAnon(), SmtpCommands(), RedisInfo(), MemcachedInfo()]
