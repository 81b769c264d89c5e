"""The verdict table: every record ``code`` → nmap's (state, reason), for every scan kind.

A verdict record (``probes.records``) carries an int32 ``code``; what it means depends on
the probe that was sent. This module is the one place that says so:

=========  ======================================  =====================================
kind       code                                    (state, reason)
=========  ======================================  =====================================
syn        OPEN 0 / CLOSED 1                       open syn-ack / closed reset
udp        OPEN 0 / CLOSED 1                       open udp-response / closed port-unreach
syn, udp   ICMP4 + icmp code, ICMP6 + icmp code    filtered, nmap's name for the code
connect    the connect()'s errno (0 = open)        CONNECT_ERRNOS, else filtered errno-name
any        NO_RESPONSE (-1)                        filtered no-response (udp: open|filtered)
ping       PING_REASONS index (host discovery)     up, echo-reply / syn-ack / arp-response…
ping       NO_RESPONSE                             down no-response
=========  ======================================  =====================================

``verdict(kind, code)`` looks one up; ``DECODERS[kind]`` is the function a ``RecordSink``
takes. The receive paths write codes with the constants here (``OPEN``, ``CLOSED``,
``ICMP4``, ``ICMP6``), and filter ICMP errors with ``ICMP4_CODES`` / ``ICMP6_CODES``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from .records import NO_RESPONSE

__all__ = ["CLOSED", "CONNECT_ERRNOS", "DECODERS", "ICMP4", "ICMP4_CODES", "ICMP6",
           "ICMP6_CODES", "NO_RESPONSE", "OPEN", "PING_REASONS", "connect_answer",
           "connect_verdict", "ping_code", "ping_verdict", "syn_verdict", "udp_verdict",
           "verdict"]

# VERDICT CODES. 0 must be open: RecordSink counts code 0 as an open port (and the
# connect scan's errno 0 is a completed handshake), -1 as no answer.
OPEN, CLOSED = 0, 1
ICMP4, ICMP6 = 0x100, 0x200  # + the ICMP code of a destination unreachable
# ICMP type 3 codes that mean "filtered" (nmap's list, for TCP and UDP probes alike; for a
# UDP probe, 3 from the target itself is closed), and ICMPv6 type 1 codes.
ICMP4_CODES = frozenset({0, 1, 2, 3, 9, 10, 13})
ICMP6_CODES = frozenset(range(7))

NO_ANSWER = ("filtered", "no-response")
_ICMP4_REASONS = {0: "net-unreach", 1: "host-unreach", 2: "proto-unreach", 3: "port-unreach",
                  9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}
# ICMPv6 destination unreachable codes, named as nmap names them.
_ICMP6_REASONS = {0: "no-route", 1: "admin-prohibited", 2: "beyond-scope",
                  3: "host-unreach", 4: "port-unreach", 5: "admin-prohibited",
                  6: "reject-route"}

#: SO_ERROR / connect_ex results → nmap's words. None: no answer (retry, then NO_RESPONSE).
CONNECT_ERRNOS: dict[int, tuple[str, str] | None] = {
    0: ("open", "syn-ack"),
    errno.ECONNREFUSED: ("closed", "conn-refused"),
    errno.ECONNRESET: ("closed", "reset"),
    errno.EHOSTUNREACH: ("filtered", "host-unreach"),
    errno.ENETUNREACH: ("filtered", "net-unreach"),
    errno.EACCES: ("filtered", "admin-prohibited"),
    errno.EPERM: ("filtered", "admin-prohibited"),
    errno.ETIMEDOUT: None,
}


def _icmp(code: int) -> tuple[str, str]:
    if ICMP4 <= code < ICMP4 + 256:
        return ("filtered", _ICMP4_REASONS.get(code - ICMP4, f"icmp-unreach-{code - ICMP4}"))
    if ICMP6 <= code < ICMP6 + 256:
        return ("filtered", _ICMP6_REASONS.get(code - ICMP6, f"icmp6-unreach-{code - ICMP6}"))
    return NO_ANSWER


def syn_verdict(code: int) -> tuple[str, str]:
    """nmap's (state, reason) for a SYN scan's code."""
    if code == OPEN:
        return ("open", "syn-ack")
    if code == CLOSED:
        return ("closed", "reset")
    return _icmp(code)


def udp_verdict(code: int) -> tuple[str, str]:
    """nmap's (state, reason) for a UDP scan's code."""
    if code == OPEN:
        return ("open", "udp-response")
    if code == CLOSED:
        return ("closed", "port-unreach")
    if code == NO_RESPONSE:
        return ("open|filtered", "no-response")
    return _icmp(code)  # ICMP4 + code / ICMP6 + code: filtered, nmap's reason


def connect_answer(err: int) -> tuple[str, str] | None:
    """The words for a connect()'s errno, or None when it is no answer (a timeout)."""
    if err in CONNECT_ERRNOS:
        return CONNECT_ERRNOS[err]
    return ("filtered", errno.errorcode.get(err, f"errno-{err}").lower())


def connect_verdict(code: int) -> tuple[str, str]:
    """nmap's (state, reason) for a connect scan's code (an errno, or NO_RESPONSE)."""
    if code == NO_RESPONSE:
        return NO_ANSWER
    return connect_answer(code) or NO_ANSWER


#: Host discovery's words for an up host (nmap's -sn reasons), by code.
PING_REASONS = ("echo-reply", "timestamp-reply", "syn-ack", "reset", "arp-response",
                "nd-response", "localhost-response")


def ping_code(reason: str) -> int:
    """The code of an up host's ``reason`` (one of PING_REASONS)."""
    return PING_REASONS.index(reason)


def ping_verdict(code: int) -> tuple[str, str]:
    """(state, reason) of a host for discovery's code: up with its reason, or down."""
    if 0 <= code < len(PING_REASONS):
        return ("up", PING_REASONS[code])
    return ("down", "no-response")


DECODERS: dict[str, Callable[[int], tuple[str, str]]] = {
    "syn": syn_verdict, "udp": udp_verdict, "connect": connect_verdict, "ping": ping_verdict,
}


def verdict(kind: str, code: int) -> tuple[str, str]:
    """``verdict("syn", 0)`` → ``("open", "syn-ack")``; kind is syn, udp, connect or ping."""
    return DECODERS[kind](code)
