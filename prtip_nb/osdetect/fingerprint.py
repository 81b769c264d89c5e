"""nmap's fingerprint tests, computed from the replies to the OS probes (pure).

A fingerprint is an ordered mapping ``{"SEQ": {"SP": "101", ...}, "OPS": ..., "T1": ...}``
of test lines to ordered attribute values, as nmap prints them (upper-case hex, no
leading zeros). The lines and attributes, from nmap's book ("TCP/IP Fingerprinting Methods
Supported by Nmap"):

- SEQ: SP, GCD, ISR (ISN predictability, GCD of the ISN steps, ISN rate), TI, CI, II
  (IP id sequences of the SEQ, closed-port and ICMP replies), SS (shared id sequence), TS
  (timestamp clock). These depend on timing; the others do not.
- OPS O1-O6 and WIN W1-W6: the options and windows of the six SEQ replies.
- ECN: R, DF, T/TG, W, O, CC (ECN support), Q.
- T1-T7: R, DF, T/TG, W (not T1), S, A, F, O (not T1), RD, Q.
- U1: R, DF, T/TG, IPL, UN, RIPL, RID, RIPCK, RUCK, RUD (the ICMP port unreachable).
- IE: R, DFI, T/TG, CD (the two echo replies).

T is the initial TTL when the hop distance is known (a directly connected host, or one
whose U1 reply tells it); TG, the TTL rounded up to 32, 64, 128 or 255, when it is not.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from functools import reduce

from ..probes.tcp import checksum
from .probes import U1_ID, U1_LEN, ProbeSet
from .replies import Reply

__all__ = [
    "Fingerprint",
    "compute",
    "format_lines",
    "hop_distance",
    "ipid_class",
    "options_string",
    "parse_fingerprint",
    "ttl_guess",
    "wrap",
]

Fingerprint = dict[str, dict[str, str]]

SEQ_NAMES = ("SEQ1", "SEQ2", "SEQ3", "SEQ4", "SEQ5", "SEQ6")
_FLAG_LETTERS = (("E", 0x40), ("U", 0x20), ("A", 0x10), ("P", 0x08), ("R", 0x04),
                 ("S", 0x02), ("F", 0x01))


def _h(n: int) -> str:
    return f"{n:X}"


def options_string(opts: bytes) -> str:
    """nmap's O value: L EOL (ends the list), N NOP, M<mss>, W<shift>, T<tsval?><tsecr?>,
    S SACK permitted; e.g. ``M5B4ST11NW7``."""
    out, i = [], 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            out.append("L")
            break
        if kind == 1:
            out.append("N")
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        size = opts[i + 1]
        body = opts[i + 2:i + size]
        if kind == 2 and len(body) == 2:
            out.append("M" + _h(struct.unpack("!H", body)[0]))
        elif kind == 3 and len(body) == 1:
            out.append("W" + _h(body[0]))
        elif kind == 4:
            out.append("S")
        elif kind == 8 and len(body) == 8:
            tsval, tsecr = struct.unpack("!II", body)
            out.append(f"T{int(tsval != 0)}{int(tsecr != 0)}")
        i += size
    return "".join(out)


def _tsval(opts: bytes) -> int | None:
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            return None
        if kind == 8 and opts[i + 1] == 10 and i + 10 <= len(opts):
            return int(struct.unpack_from("!I", opts, i + 2)[0])
        i += opts[i + 1]
    return None


def ttl_guess(ttl: int) -> int:
    """The initial TTL a received ``ttl`` most likely started from (32, 64, 128 or 255)."""
    for start in (32, 64, 128):
        if ttl <= start:
            return start
    return 255


def hop_distance(u1: Reply | None, sent_ttl: int) -> int | None:
    """Hops to the host from the TTL its port unreachable quotes (our U1 as it arrived)."""
    if u1 is None or len(u1.quoted) < 20:
        return None
    return sent_ttl - u1.quoted[8] + 1


def _ttl(r: Reply, distance: int | None) -> dict[str, str]:
    if distance is not None:
        return {"T": _h(r.ttl + distance - 1)}
    return {"TG": _h(ttl_guess(r.ttl))}


def _flags(f: int) -> str:
    return "".join(letter for letter, bit in _FLAG_LETTERS if f & bit)


def _quirks(r: Reply) -> str:
    return ("R" if r.reserved else "") + ("U" if r.urgent and not r.flags & 0x20 else "")


def _tcp_test(r: Reply | None, seq: int, ack: int, distance: int | None, *,
              window: bool = True, opts: bool = True) -> dict[str, str]:
    if r is None:
        return {"R": "N"}
    out = {"R": "Y", "DF": "Y" if r.df else "N", **_ttl(r, distance)}
    if window:
        out["W"] = _h(r.window)
    out["S"] = ("Z" if r.seq == 0 else "A" if r.seq == ack else
                "A+" if r.seq == (ack + 1) & 0xFFFFFFFF else "O")
    out["A"] = ("Z" if r.ack == 0 else "S" if r.ack == seq else
                "S+" if r.ack == (seq + 1) & 0xFFFFFFFF else "O")
    out["F"] = _flags(r.flags)
    if opts:
        out["O"] = options_string(r.options)
    out["RD"] = _h(zlib.crc32(r.data)) if r.flags & 0x04 and r.data else "0"
    out["Q"] = _quirks(r)
    return out


def _ecn(r: Reply | None, distance: int | None) -> dict[str, str]:
    if r is None:
        return {"R": "N"}
    ece, cwr = bool(r.flags & 0x40), bool(r.flags & 0x80)
    cc = "S" if ece and cwr else "Y" if ece else "O" if cwr else "N"
    return {"R": "Y", "DF": "Y" if r.df else "N", **_ttl(r, distance), "W": _h(r.window),
            "O": options_string(r.options), "CC": cc, "Q": _quirks(r)}


def _u1(r: Reply | None, probes: ProbeSet, distance: int | None) -> dict[str, str]:
    if r is None:
        return {"R": "N"}
    out = {"R": "Y", "DF": "Y" if r.df else "N", **_ttl(r, distance), "IPL": _h(r.ip_len),
           "UN": _h(r.unused)}
    q = r.quoted
    qlen, qid, qsum = struct.unpack_from("!HH4xH", q, 2) if len(q) >= 20 else (0, 0, 0)
    out["RIPL"] = "G" if qlen == U1_LEN else _h(qlen)
    out["RID"] = "G" if qid == U1_ID else _h(qid)
    ihl = (q[0] & 0x0F) * 4 if q else 20
    out["RIPCK"] = ("Z" if qsum == 0 else "G" if len(q) >= ihl and checksum(q[:ihl]) == 0
                    else "I")
    usum = struct.unpack_from("!H", q, ihl + 6)[0] if len(q) >= ihl + 8 else 0
    out["RUCK"] = "G" if usum == probes.udp_sum else _h(usum)
    data = q[ihl + 8:]
    out["RUD"] = "G" if all(c == 0x43 for c in data) else "I"
    return out


def _ie(r1: Reply | None, r2: Reply | None, distance: int | None) -> dict[str, str]:
    if r1 is None or r2 is None:
        return {"R": "N"}
    if not r1.df and not r2.df:
        dfi = "N"
    elif r1.df and not r2.df:
        dfi = "S"  # both echo the probes' DF (set on IE1, clear on IE2)
    elif r1.df and r2.df:
        dfi = "Y"
    else:
        dfi = "O"
    c1, c2 = r1.icmp_code, r2.icmp_code
    cd = ("Z" if c1 == 0 and c2 == 0 else "S" if (c1, c2) == (9, 0)
          else _h(c1) if c1 == c2 else "O")
    return {"R": "Y", "DFI": dfi, **_ttl(r1, distance), "CD": cd}


def ipid_class(ids: list[int], *, icmp: bool = False) -> str | None:
    """nmap's IP id sequence class (Z, RD, RI, BI, I or the one value in hex), or None."""
    if len(ids) < 2:
        return None
    if all(i == 0 for i in ids):
        return "Z"
    diffs = [(b - a) & 0xFFFF for a, b in zip(ids, ids[1:], strict=False)]
    if not icmp and any(d >= 20000 for d in diffs):
        return "RD"
    if all(i == ids[0] for i in ids):
        return _h(ids[0])
    if any(d > 1000 and (d % 256 or d >= 256000) for d in diffs):
        return "RI"
    if all(d % 256 == 0 and d <= 5120 for d in diffs):
        return "BI"
    if all(d < 10 for d in diffs):
        return "I"
    return None


def _seq(replies: Mapping[str, Reply], sent: Mapping[str, float]) -> dict[str, str]:
    out: dict[str, str] = {}
    got = [n for n in SEQ_NAMES if n in replies and replies[n].flags & 0x12 == 0x12]
    if len(got) >= 4:
        isns = [replies[n].seq for n in got]
        diffs = [min((b - a) & 0xFFFFFFFF, (a - b) & 0xFFFFFFFF)
                 for a, b in zip(isns, isns[1:], strict=False)]
        gcd = reduce(math.gcd, diffs)
        rates = [d / max(1e-6, sent[b] - sent[a])
                 for d, a, b in zip(diffs, got, got[1:], strict=False)]
        avg = sum(rates) / len(rates)
        div = gcd if gcd > 9 else 1
        var = sum((r / div - avg / div) ** 2 for r in rates) / max(1, len(rates) - 1)
        sd = math.sqrt(var)
        out["SP"] = "0" if sd <= 1 else _h(round(8 * math.log2(sd)))
        out["GCD"] = _h(gcd)
        out["ISR"] = "0" if avg < 1 else _h(round(8 * math.log2(avg)))
    tcp_ids = [replies[n].ip_id for n in got]
    ti = ipid_class(tcp_ids) if len(got) >= 3 else None
    closed = [replies[n].ip_id for n in ("T5", "T6", "T7") if n in replies]
    ci = ipid_class(closed)
    ie = [replies[n].ip_id for n in ("IE1", "IE2") if n in replies]
    ii = ipid_class(ie, icmp=True) if len(ie) == 2 else None
    for key, val in (("TI", ti), ("CI", ci), ("II", ii)):
        if val is not None:
            out[key] = val
    if ti in ("RI", "BI", "I") and ti == ii:
        first, last = got[0], got[-1]
        span = SEQ_NAMES.index(last) - SEQ_NAMES.index(first)
        avg_inc = ((tcp_ids[-1] - tcp_ids[0]) & 0xFFFF) / max(1, span)
        out["SS"] = "S" if ((ie[0] - tcp_ids[0]) & 0xFFFF) < 3 * avg_inc else "O"
    stamps = [_tsval(replies[n].options) for n in got]
    if got:
        if any(s is None for s in stamps):
            out["TS"] = "U"
        elif any(s == 0 for s in stamps):
            out["TS"] = "0"
        elif len(got) >= 2:
            hz = [((b - a) & 0xFFFFFFFF) / max(1e-6, sent[nb] - sent[na])
                  for a, b, na, nb in zip(stamps, stamps[1:], got, got[1:], strict=False)
                  if a is not None and b is not None]
            avg_hz = sum(hz) / len(hz)
            if avg_hz < 5.66:
                out["TS"] = "1"
            elif 70 < avg_hz <= 150:
                out["TS"] = "7"
            elif 150 < avg_hz <= 350:
                out["TS"] = "8"
            else:
                out["TS"] = _h(round(math.log2(avg_hz)))
    return out


def compute(replies: Mapping[str, Reply], probes: ProbeSet, sent: Mapping[str, float],
            distance: int | None) -> Fingerprint:
    """The fingerprint (SEQ, OPS, WIN, ECN, T1-T7, U1, IE) of one host's replies.

    ``replies`` maps probe names to their replies, ``sent`` the probes sent to their send
    times (s): a TCP probe not in it gets no line. ``distance`` is the hop count the U1
    reply tells, if any."""
    fp: Fingerprint = {}
    seq = _seq(replies, sent)
    if seq:
        fp["SEQ"] = seq
    syn_acks = {n: replies[n] for n in SEQ_NAMES if n in replies}
    if syn_acks:
        fp["OPS"] = {f"O{i + 1}": options_string(syn_acks[n].options)
                     for i, n in enumerate(SEQ_NAMES) if n in syn_acks}
        fp["WIN"] = {f"W{i + 1}": _h(syn_acks[n].window)
                     for i, n in enumerate(SEQ_NAMES) if n in syn_acks}
    # A probe never sent (no open port: SEQ, ECN, T1-T4) gives no line at all, as in
    # nmap; "R=N" would claim the host was asked and stayed silent.
    if "ECN" in sent:
        fp["ECN"] = _ecn(replies.get("ECN"), distance)
    first = next((n for n in SEQ_NAMES if n in replies), None)
    if first is not None or any(n in sent for n in SEQ_NAMES):
        t1 = replies.get(first) if first else None
        p1 = probes[first or "SEQ1"]
        fp["T1"] = _tcp_test(t1, p1.seq, p1.ack, distance, window=False, opts=False)
    for name in ("T2", "T3", "T4", "T5", "T6", "T7"):
        if name in sent:
            p = probes[name]
            fp[name] = _tcp_test(replies.get(name), p.seq, p.ack, distance)
    fp["U1"] = _u1(replies.get("U1"), probes, distance)
    fp["IE"] = _ie(replies.get("IE1"), replies.get("IE2"), distance)
    return fp


def format_lines(fp: Fingerprint, scan: Mapping[str, str] | None = None) -> str:
    """The fingerprint as nmap writes it unwrapped: one ``NAME(A=v%B=w)`` line per test."""
    lines = [] if scan is None else ["SCAN(" + "%".join(f"{k}={v}" for k, v in scan.items())
                                     + ")"]
    lines += [f"{name}(" + "%".join(f"{k}={v}" for k, v in attrs.items()) + ")"
              for name, attrs in fp.items()]
    return "\n".join(lines)


def wrap(text: str) -> str:
    """nmap's submission form: the lines joined, cut every 71 characters, ``OS:`` first."""
    flat = text.replace("\n", "")
    return "\n".join("OS:" + flat[i:i + 71] for i in range(0, len(flat), 71))


def parse_fingerprint(text: str) -> Fingerprint:
    """A fingerprint from nmap's text, wrapped (``OS:`` lines) or not; SCAN is dropped."""
    flat = "".join(line[3:] if line.startswith("OS:") else line
                   for line in text.strip().splitlines())
    fp: Fingerprint = {}
    i = 0
    while i < len(flat):
        open_ = flat.find("(", i)
        close = flat.find(")", open_)
        if open_ < 0 or close < 0:
            break
        name, body = flat[i:open_].strip(), flat[open_ + 1:close]
        if name != "SCAN":
            attrs: dict[str, str] = {}
            for kv in body.split("%"):
                if kv:
                    key, _, val = kv.partition("=")
                    attrs[key] = val
            fp[name] = attrs
        i = close + 1
    return fp
