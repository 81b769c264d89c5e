"""DNS messages for reverse lookups: build a query, parse a reply. Pure: no sockets.

Only what reverse DNS and its forward confirmation need (RFC 1035): one question, the
PTR, A, AAAA and CNAME records of the answer section, the rcode and the TC flag.

- ``reverse_name("198.51.100.7")`` -> ``"7.100.51.198.in-addr.arpa"`` (ip6.arpa for IPv6);
  ``address_of_reverse`` is its inverse (None for a name that is not one).
- ``build_query(qid, name, qtype)``: the bytes of a recursive query.
- ``parse_reply(data)``: a ``Reply`` or None for anything that is not a well-formed
  response (short, a query, bad counts, a name pointer loop).

NAME POINTERS. A compressed name may point backwards anywhere in the message; a hostile
reply can make pointers loop. Each name follows at most ``MAX_POINTERS`` pointers and
reads at most 255 bytes of labels, so parsing is bounded by the message size.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

__all__ = ["A", "AAAA", "CNAME", "NOERROR", "NXDOMAIN", "PTR", "REFUSED", "SERVFAIL", "Reply",
           "address_of_reverse", "build_query", "parse_reply", "query_bytes", "question",
           "reverse_name"]

A, PTR, CNAME, AAAA = 1, 12, 5, 28
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
MAX_POINTERS = 32
MAX_NAME = 255
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")


def reverse_name(address: str) -> str:
    """The PTR owner name of ``address`` (in-addr.arpa or ip6.arpa).

    A canonical dotted quad is reversed as text (ipaddress costs ~5 µs an address, which is
    most of building 256 queries); anything else goes through ipaddress."""
    parts = address.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and (p == "0" or p[0] != "0")
                               and len(p) <= 3 and int(p) < 256
                               for p in parts):
        return f"{parts[3]}.{parts[2]}.{parts[1]}.{parts[0]}.in-addr.arpa"
    return ipaddress.ip_address(address).reverse_pointer


def address_of_reverse(name: str) -> str | None:
    """The address a reverse name stands for, or None (nmap's ptrToIp)."""
    labels = name.lower().rstrip(".").split(".")
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            return str(ipaddress.IPv6Address(int(nibbles, 16)))
    except ValueError:
        return None
    return None


def question(name: str, qtype: int) -> bytes:
    """The question section of a query for ``name`` of type ``qtype``, class IN: what a
    reply must echo (a resolver builds it once per name, and only the id changes)."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if not label.isascii() else label.encode()
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\x00" + struct.pack("!HH", qtype, CLASS_IN)
    return bytes(out)


def build_query(qid: int, name: str, qtype: int) -> bytes:
    """A recursive (RD) query for ``name`` of type ``qtype``, class IN."""
    return query_bytes(qid, question(name, qtype))


def query_bytes(qid: int, question_wire: bytes) -> bytes:
    """A recursive (RD) query: the header for ``qid``, then ``question_wire``."""
    return _HEADER.pack(qid & 0xFFFF, 0x0100, 1, 0, 0, 0) + question_wire


@dataclass(frozen=True)
class Reply:
    """A parsed response: its id, rcode, TC flag, question and IN-class answers."""

    qid: int
    rcode: int
    truncated: bool
    qname: str
    qtype: int
    answers: list[tuple[str, int, str, int]] = field(default_factory=list)  # name, type, value, ttl

    def ptr_name(self) -> str | None:
        """The host name a PTR reply gives, nmap's way: PTR records owned by the question's
        name or by the CNAME it points to (RFC 2317 delegation); the last one wins."""
        owners = {self.qname.lower()}
        found = None
        for name, rtype, value, _ttl in self.answers:
            if name.lower() not in owners:
                continue
            if rtype == CNAME:
                owners.add(value.lower())
            elif rtype == PTR:
                found = value
        return found

    def addresses(self) -> list[str]:
        """A and AAAA values of the answer (for forward confirmation)."""
        return [v for _n, t, v, _ttl in self.answers if t in (A, AAAA)]

    def min_ttl(self) -> int:
        return min((ttl for *_rest, ttl in self.answers), default=0)


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """The name at ``pos`` and the offset just past it (in the original position)."""
    labels: list[bytes] = []
    end = -1
    length = 0
    size = len(data)
    for _ in range(MAX_POINTERS + MAX_NAME):
        if pos >= size:
            raise ValueError("name runs past the message")
        n = data[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= size:
                raise ValueError("truncated pointer")
            if end < 0:
                end = pos + 2
            target = ((n & 0x3F) << 8) | data[pos + 1]
            if target >= pos:  # forward or self pointer: only backward ones are legal
                raise ValueError("name pointer does not point back")
            pos = target
            continue
        if n & 0xC0:
            raise ValueError("unknown label type")
        if n == 0:
            return (b".".join(labels).decode("ascii", "backslashreplace"),
                    (end if end >= 0 else pos + 1))
        length += n + 1
        if length > MAX_NAME or pos + 1 + n > size:
            raise ValueError("name too long")
        labels.append(data[pos + 1:pos + 1 + n])
        pos += 1 + n
    raise ValueError("name pointer loop")


def _ntoa(raw: bytes) -> str:
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def parse_reply(data: bytes) -> Reply | None:
    """The response in ``data``, or None if it is not a well-formed DNS response."""
    try:
        if len(data) < _HEADER.size:
            return None
        qid, flags, qd, an, _ns, _ar = _HEADER.unpack_from(data)
        if not flags & 0x8000 or (flags >> 11) & 0xF != 0 or qd != 1:
            return None
        qname, pos = _name(data, _HEADER.size)
        qtype, _qclass = struct.unpack_from("!HH", data, pos)
        pos += 4
        answers = []
        for _ in range(min(an, 512)):
            name, pos = _name(data, pos)
            rtype, rclass, ttl, rdlen = _RR.unpack_from(data, pos)
            pos += _RR.size
            rdata_end = pos + rdlen
            if rdata_end > len(data):
                break
            if rclass == CLASS_IN:
                if rtype in (PTR, CNAME):
                    answers.append((name, rtype, _name(data, pos)[0], ttl))
                elif rtype == A and rdlen == 4:
                    answers.append((name, A, _ntoa(data[pos:rdata_end]), ttl))
                elif rtype == AAAA and rdlen == 16:
                    address = str(ipaddress.IPv6Address(data[pos:rdata_end]))
                    answers.append((name, AAAA, address, ttl))
            pos = rdata_end
        return Reply(qid, flags & 0xF, bool(flags & 0x0200), qname, qtype, answers)
    except (ValueError, struct.error):
        return None
