"""``ProbeModule``: what a scan kind's packets are, apart from how they are sent.

In the spirit of zmap's probe modules: a module only builds and parses packets. The engine
(engine/: rounds, retries, rate, quiet period, dedup, RTT) and the sockets (net/: raw
sender, capture ring) are the same for every kind; what differs is here:

- ``prepare(family, src, sport)``: the fixed bytes of every probe, built once (a template
  the sender patches);
- ``make(family, keys, bases, ports)``: the per-probe fields for a whole batch, in numpy (``seq``:
  the keyed value the reply must echo; ``csum``: the checksum; SYN over IPv4 also
  ``ident``), no Python object a probe;
- ``validate(family, rows, keys, src_hi, src_lo)``: which reply rows (probes.rows dtypes)
  answer a probe of ours (the keyed value, our own address);
- ``classify(family, rows)``: each valid row's verdict code; ``verdict(code)`` turns a code
  into nmap's (state, reason) through the one table, probes.verdicts;
- ``fills``: the record fields (probes.records) the module's receive path fills.

Modules: probes.tcpsyn (SYN scan) and probes.udpprobe (UDP scan, its payload groups) follow
this protocol, and are the one definition their engines use: engine.syn / engine.udp build
every probe with ``prepare`` and ``make``, engine.synrx / engine.udprx judge every reply
with the module's ``validate`` / ``classify`` (and its checks of ICMP errors).
probes.pingprobe (host discovery's ICMP / TCP pings) has the same parts per host rather
than per numpy batch (a few packets a host, parsed one by one). None imports
sockets, threads, event loops or the engine (the import-linter contract "pure-probes").
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from .rows import U64

__all__ = ["Batch", "ProbeModule"]

#: per-probe fields for a batch: name → uint64 array, one element a probe.
Batch = dict[str, U64]


@runtime_checkable
class ProbeModule(Protocol):
    """A scan kind's packets: built in batches, replies validated and classified in blocks."""

    name: ClassVar[str]
    kind: ClassVar[str]  # its key in probes.verdicts.DECODERS
    fills: ClassVar[tuple[str, ...]]

    def prepare(self, family: int, src: bytes, sport: int) -> bytes: ...

    def make(self, family: int, keys: U64 | int, bases: U64 | int, ports: U64) -> Batch: ...

    def validate(self, family: int, rows: np.ndarray, keys: U64 | int,
                 src_hi: U64 | np.uint64, src_lo: U64 | np.uint64) -> np.ndarray: ...

    def classify(self, family: int, rows: np.ndarray) -> np.ndarray: ...

    def verdict(self, code: int) -> tuple[str, str]: ...
