"""The host discovery probe module: nmap's privileged pings, built and judged per host.

Discovery sends a few packets a host, not one a port, so its batch is a host's probes
(``make``: socket name and bytes, built with ``struct`` by probes.ping) and its replies are
judged one packet at a time (``classify``: the parsers of probes.ping, which check the keyed
value every probe carries). Its words come from the one verdict table (probes.verdicts,
kind "ping"): ``verdict(code)`` is ("up", reason) or ("down", "no-response").
"""

from __future__ import annotations

from typing import ClassVar

from . import ping
from .verdicts import NO_RESPONSE, ping_code, ping_verdict

__all__ = ["PING", "PingModule"]


class PingModule:
    """See the module docstring; ``PING`` is the one instance."""

    name: ClassVar[str] = "ping"
    kind: ClassVar[str] = "ping"
    fills: ClassVar[tuple[str, ...]] = ("state", "reason", "rtt_ms")  # a HostVerdict's

    def make(self, family: int, src: bytes, dst: bytes, *, sport: int, ident: int,
             rnd: int, key: int, on_link: bool) -> list[tuple[str, bytes]]:
        """Round ``rnd``'s probes to one host: (socket name, packet). On-link: one echo,
        whose only job is to make the kernel resolve the neighbour (its answer decides)."""
        echo = (f"icmp{family}", ping.echo(family, ident, rnd, key))
        if on_link:
            return [echo]
        out = [echo]
        for port in (ping.SYN_PORT, ping.ACK_PORT):
            out.append((f"tcp{family}", ping.tcp_probe(family, src, dst, sport, port, key)))
        if family == 4:
            out.append(("icmp4", ping.timestamp(ident, rnd, key)))
        return out

    def classify(self, name: str, family: int, data: bytes, src: bytes | None, *,
                 ident: int, sport: int, keys: dict[bytes, int]) -> ping.Reply | None:
        """The valid reply in ``data`` (read from socket ``name``), or None."""
        if name == "icmp4":
            return ping.parse_icmp4(data, ident, keys)
        if name == "icmp6":
            return None if src is None else ping.parse_icmp6(data, src, ident, keys)
        return ping.parse_tcp(family, data, src, sport, keys)

    def code(self, reason: str) -> int:
        return ping_code(reason)

    def verdict(self, code: int) -> tuple[str, str]:
        return ping_verdict(code)

    DOWN: ClassVar[int] = NO_RESPONSE


PING = PingModule()
