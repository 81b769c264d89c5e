"""The UDP scan's receive thread: UDP replies and ICMP errors, validated, deduplicated.

It is the SYN receiver (engine.synrx) with another ``_block``: the same ring, the same
answered bitmap and verdict records, and the same rule that a reply is judged on its
own. What changes is what a reply proves:

- a UDP datagram from a target port to our source port: open / udp-response (a UDP
  reply carries nothing of ours to check, as for nmap; the source port is random);
- an ICMP / ICMPv6 destination unreachable counts only if the datagram it quotes is a
  probe we sent: our source address and port, a target and a scanned port, and the
  PROBE MARKER (IPv4 id, IPv6 flow label; probes.udp) recomputed from the secret.
  Port unreachable from the target itself is closed / port-unreach; from anyone else,
  or another unreachable code of nmap's list, filtered with nmap's reason.

WHY VECTORISED ICMP. For a UDP scan ICMP errors are the common reply (every closed
port), not the rare one: a block is parsed, validated and deduplicated by numpy as a
whole, UDP replies and ICMP errors each in one pass. IPv4 packets with IP options
(outer or quoted) are rare enough to be dropped (counted in ``stats["ignored"]``).

HOSTILE INPUT. A frame is read only where its snap length (and its ring block) reaches;
one too short for its headers, whose IPv4 total length, IPv6 payload length or UDP
length says less than a whole header, or whose IP version or IHL is impossible is
masked out and counted ``invalid`` (synrx.Receiver's frame-by-frame fallback catches
anything that raises).

ICMP ARRIVALS. Every valid ICMP error (duplicates included) bumps ``icmp``, its time goes
to ``icmp_times`` and the target it is about to ``icmp_hosts``: the engine reads each
target's ICMP rate limit from them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..probes.rows import ICMP4_UDP as _ICMP4
from ..probes.rows import ICMP6_UDP as _ICMP6
from ..probes.rows import UDP4 as _UDP4
from ..probes.rows import UDP6 as _UDP6
from ..probes.udpprobe import UDP
from ..probes.verdicts import CLOSED, ICMP4, ICMP4_CODES, ICMP6, NO_RESPONSE, OPEN, udp_verdict
from ..targets.space import join_index
from .synrx import _HDR as _TP_HDR
from .synrx import Receiver, _gather, _offsets

# The verdict names are re-exported: probes.verdicts owns them.
__all__ = ["CLOSED", "ICMP4", "ICMP4_CODES", "ICMP6", "NO_RESPONSE", "OPEN", "UdpReceiver",
           "udp_verdict"]

# VERDICT CODES and their words (RecordSink looks them up through ``decode_udp``):
# probes.verdicts.

_M64 = (1 << 64) - 1
_U64 = npt.NDArray[np.uint64]
# IP + UDP header of a reply; IP + ICMP + quoted IP + UDP of an error: probes.rows.


def _safe_gather(arr: npt.NDArray[np.uint8], p: npt.NDArray[np.int64], ok: np.ndarray,
                 dt: np.dtype) -> np.ndarray:
    """``_gather`` at ``p`` where ``ok``, elsewhere at a harmless in-bounds offset."""
    if len(arr) < dt.itemsize:  # no row fits: none is ``ok`` either
        return np.zeros(len(p), dt)
    return _gather(arr, np.where(ok, np.clip(p, 0, len(arr) - dt.itemsize), 0), dt)


class UdpReceiver(Receiver):
    """engine.synrx.Receiver with UDP's parsing and validation (see the module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.thread.name = "prtip-udp-rx"
        self.stats.update(icmp=0, udp=0)
        self.icmp = 0
        self.icmp_times: list[np.ndarray] = []  # arrival times of valid ICMP errors
        self.icmp_hosts: list[np.ndarray] = []  # and the target each one is about

    def _block(self, fam: int, arr: npt.NDArray[np.uint8], first: int, n: int) -> None:
        end = self._block_end(fam, arr, first)
        offs = _offsets(arr, first, n, end)
        hdr = _gather(arr, offs, _TP_HDR)
        p = offs + hdr["net"].astype(np.int64)
        # What each frame really holds: its snap length, cut at the block's end.
        snap = np.minimum(hdr["snap"].astype(np.int64), end - p)
        ts = hdr["sec"] + hdr["nsec"] * 1e-9
        base_dt = _UDP4 if fam == 4 else _UDP6
        err_dt = _ICMP4 if fam == 4 else _ICMP6
        big = snap >= base_dt.itemsize
        ip = _safe_gather(arr, p, big, base_dt)
        if fam == 4:
            # IHL below 5, or another version, is no packet; a total length shorter than
            # the headers read means they are not all there.
            sane = big & (ip["vhl"] >> 4 == 4) & ((ip["vhl"] & 15) >= 5)
            plain = sane & (ip["vhl"] == 0x45)
            have = ip["len"].astype(np.int64)
        else:
            sane = big & (ip["vtc"] >> 4 == 6)
            plain = sane
            have = ip["plen"].astype(np.int64) + 40
        udp = plain & (ip["proto"] == 17)
        icmp = plain & (ip["proto"] == (1 if fam == 4 else 58))
        is_udp = udp & (have >= base_dt.itemsize) & (ip["ulen"] >= 8)
        is_icmp = icmp & (np.minimum(snap, have) >= err_dt.itemsize)
        bad = int((~sane).sum()) + int((udp & ~is_udp).sum()) + int((icmp & ~is_icmp).sum())
        self.stats["invalid"] += bad + n - len(offs)  # frames past a broken next offset too
        self.stats["ignored"] += len(offs) - bad - int(is_udp.sum()) - int(is_icmp.sum())
        if is_udp.any():
            self._udp(fam, ip[is_udp], ts[is_udp])
        if is_icmp.any():
            err = _safe_gather(arr, p, is_icmp, err_dt)[is_icmp]
            self._errors(fam, ip[is_icmp], err, ts[is_icmp])

    def _lookup(self, fam: int, hi: _U64, lo: _U64 | None, port: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(host index, port index, both found)."""
        h = self.hosts.index_array(fam, hi, lo)
        pi = self.ports.index_array(port)
        return h, pi, (h >= 0) & (pi >= 0)

    def _constants(self, fam: int, h: np.ndarray) -> tuple[_U64, _U64, _U64]:
        """Each row's host key and our source address (high, low halves; IPv4: the
        address in ``high``), as the probe module's ``validate`` wants them."""
        uh, inv = np.unique(h, return_inverse=True)
        infos = [self.hosts.info(int(x)) for x in uh.tolist()]
        keys = np.array([i.key for i in infos], np.uint64)[inv]
        srcs = [int.from_bytes(i.src, "big") for i in infos]
        if fam == 4:
            return keys, np.array(srcs, np.uint64)[inv], np.zeros(len(h), np.uint64)
        return (keys, np.array([s >> 64 for s in srcs], np.uint64)[inv],
                np.array([s & _M64 for s in srcs], np.uint64)[inv])

    def _udp(self, fam: int, ip: np.ndarray, ts: np.ndarray) -> None:
        st = self.stats
        st["udp"] += len(ip)
        h, pi, ok = self._lookup(fam, ip["src"], None if fam == 4 else ip["src_lo"],
                                    ip["tport"])
        ok &= ip["myport"] == self.sport
        # A scan of every port on loopback probes our own source port too: that probe,
        # looped back from us to us, is not a reply.
        self_sent = (ip["tport"] == self.sport) & (ip["src"] == ip["dst"])
        if fam == 6:
            self_sent &= ip["src_lo"] == ip["dst_lo"]
        ok &= ~self_sent
        if not ok.any():
            st["invalid"] += len(ip)
            return
        ip, ts, h, pi = ip[ok], ts[ok], h[ok], pi[ok]
        good = UDP.validate(fam, ip, *self._constants(fam, h))
        st["invalid"] += len(ok) - int(good.sum())
        j = join_index(h[good], pi[good], self.hosts.size)
        self._record(j, UDP.classify(fam, ip[good]), ip["ttl"][good], ts[good])

    def _errors(self, fam: int, ip: np.ndarray, err: np.ndarray, ts: np.ndarray) -> None:
        st = self.stats
        ok = UDP.accept_error(fam, err)
        qlo = None if fam == 4 else err["qdst_lo"]
        if fam == 4:  # a quoted header with an impossible version or IHL: malformed
            qbad = (err["type"] == 3) & ((err["qvhl"] >> 4 != 4) | ((err["qvhl"] & 15) < 5))
            st["invalid"] += int(qbad.sum())
            st["ignored"] -= int(qbad.sum())
        st["ignored"] += len(err) - int(ok.sum())  # other ICMP, or not about UDP
        ok &= err["qsport"] == self.sport
        h, pi, found = self._lookup(fam, err["qdst"], qlo, err["qdport"])
        ok &= found
        if not ok.any():
            st["invalid"] += int((err["qsport"] == self.sport).sum())
            return
        ip, err, ts, h, pi = ip[ok], err[ok], ts[ok], h[ok], pi[ok]
        good = UDP.validate_error(fam, err, *self._constants(fam, h))
        st["invalid"] += len(good) - int(good.sum())
        if not good.any():
            return
        ip, err, ts, h, pi = ip[good], err[good], ts[good], h[good], pi[good]
        self.icmp += len(ts)
        st["icmp"] += len(ts)
        # Hosts first: a reader that sees len(icmp_times) == k finds k host blocks too.
        self.icmp_hosts.append(h.astype(np.int64))
        self.icmp_times.append(ts.copy())
        codes = UDP.classify_error(fam, ip, err)  # closed from the target, else filtered
        j = join_index(h, pi, self.hosts.size)
        self._record(j, codes, ip["ttl"], ts)
