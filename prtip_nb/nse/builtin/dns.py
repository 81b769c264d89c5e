"""dns-nsid: what a name server says it is (RFC 5001 NSID; the CHAOS-class TXT names
``id.server`` (RFC 4892) and ``version.bind``), over DNS on TCP (RFC 7766: a two-byte
length before each message)."""

from __future__ import annotations

import os
import struct
from typing import Any

from prtip_nb.nse.api import Script
from prtip_nb.nse.context import Conn, Context, ScriptError

CLASS_CH, TYPE_TXT, TYPE_OPT, OPT_NSID = 3, 16, 41, 3


def query(name: str, *, nsid: bool) -> bytes:
    qid = os.urandom(2)
    header = qid + struct.pack(">HHHHH", 0x0100, 1, 0, 0, 1 if nsid else 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    msg = header + qname + struct.pack(">HH", TYPE_TXT, CLASS_CH)
    if nsid:  # an OPT record asking for NSID (RFC 6891 6.1.2, RFC 5001 2.1)
        msg += b"\x00" + struct.pack(">HHIH", TYPE_OPT, 4096, 0, 4) + struct.pack(">HH", 3, 0)
    return msg


def _skip_name(msg: bytes, i: int) -> int:
    for _ in range(128):
        if i >= len(msg):
            raise ScriptError("a truncated DNS name")
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += 1 + n
    raise ScriptError("a DNS name too long")


def answers(msg: bytes) -> tuple[list[str], bytes | None]:
    """(TXT strings of the answers, the NSID option's bytes if any)."""
    if len(msg) < 12:
        raise ScriptError("a truncated DNS reply")
    qd, an, ns, ar = struct.unpack_from(">HHHH", msg, 4)
    i = 12
    for _ in range(qd):
        i = _skip_name(msg, i) + 4
    txts: list[str] = []
    nsid = None
    for n in range(an + ns + ar):
        i = _skip_name(msg, i)
        if i + 10 > len(msg):
            break
        rtype, _, _, rdlen = struct.unpack_from(">HHIH", msg, i)
        rdata = msg[i + 10:i + 10 + rdlen]
        i += 10 + rdlen
        if rtype == TYPE_TXT and n < an:
            j = 0
            while j < len(rdata):
                ln = rdata[j]
                txts.append(rdata[j + 1:j + 1 + ln].decode("utf-8", "replace"))
                j += 1 + ln
        elif rtype == TYPE_OPT:
            j = 0
            while j + 4 <= len(rdata):
                code, ln = struct.unpack_from(">HH", rdata, j)
                if code == OPT_NSID:
                    nsid = rdata[j + 4:j + 4 + ln]
                j += 4 + ln
    return txts, nsid


async def _ask(conn: Conn, msg: bytes) -> bytes:
    await conn.send(struct.pack(">H", len(msg)) + msg)
    head = await conn.recv(2)
    while len(head) < 2:
        more = await conn.recv(2 - len(head))
        if not more:
            raise ScriptError("the server closed the connection")
        head += more
    (n,) = struct.unpack(">H", head)
    buf = bytearray()
    while len(buf) < n:
        chunk = await conn.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class DnsNsid(Script):
    """The server's NSID, ``id.server`` and ``version.bind`` (over TCP)::

        | dns-nsid:
        |_  bind.version: dnsmasq-2.90

    Data: ``NSID`` (text, with the hex in parentheses as nmap shows it), ``id.server``,
    ``bind.version``; those the server answers.
    """

    id = "dns-nsid"
    categories = ("discovery", "default", "safe")
    ports = (53,)
    services = ("domain",)

    def __init__(self) -> None:
        self.description = self.__doc__ or ""

    async def run(self, ctx: Context) -> Any:
        out: dict[str, str] = {}
        async with await ctx.connect() as conn:
            txt, nsid = answers(await _ask(conn, query("id.server", nsid=True)))
            if nsid:
                out["NSID"] = f"{nsid.decode('ascii', 'replace')} ({nsid.hex()})"
            if txt:
                out["id.server"] = txt[0]
            txt, _ = answers(await _ask(conn, query("version.bind", nsid=False)))
            if txt:
                out["bind.version"] = txt[0]
        return out or None


SCRIPTS = [DnsNsid()]
