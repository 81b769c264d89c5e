"""RecordSink: verdict records (probes.records) in bulk to ports RecordBatches.

numpy maps indices to (host, proto, port) and codes to nmap's words for thousands of
records at a time; columns are built from buffers, never with ``pa.array`` (which would
import pandas, see results/_convert.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from ..net.counters import Counters
from ..probes.records import DTYPE, NO_RESPONSE, PEAK_RSS, RETRIES, SENT, SKIPPED
from ..probes.verdicts import NO_ANSWER
from ..results import _arrow, schema
from ..results import _convert as cv
from ..targets import PortSet, TargetSet
from ..targets.space import split_index
from .hosttally import HostTally, V4Text

Decode = Callable[[int], tuple[str, str]]
#: A block's (host index or None, proto code(s), port, state index, reason index).
_Decoded = tuple[np.ndarray | None, np.ndarray | int, np.ndarray, np.ndarray, np.ndarray]
#: UDP rows' codes are looked up as UDP_CODES + code (no-response too) when the sink has
#: a ``decode_udp``: the same number means another verdict for a UDP probe (engine.udprx).
UDP_CODES = 1 << 20

FLUSH_ROWS = 65536  # records that trigger a flush: fewer mid-scan GIL grabs on the
# receive thread than 16K (measured ~10% faster in-process), and no more peak memory
CHUNK = 16384  # rows per RecordBatch: bounds the conversion's temporaries
# A sink that tallies streams every row to Parquet and holds few (hold="open"): its
# batches become parts as they are, so it makes them 4x bigger. Measured writing a /18's
# 1.6M rows: zstd 0.54 -> 0.39 us a row (per column chunk costs: a zstd context each,
# statistics, footers), 11.1 -> 8.8 B a row on disk, a quarter of the parts to open on
# read, and a quarter of the per-batch Python in the flush thread; ~6 MiB of temporaries.
STREAM_CHUNK = 65536
BEHIND = 4  # batches buffered before a feeder flushes itself (start_flusher)
LIVE_AGE = 0.5  # seconds a verdict may wait before the scan's live views see it
_PROTOS = cv.plain_strings(["tcp", "udp"])
_FIRST_SEEN = schema.PORTS.field("first_seen").type


class PortMap:
    """Vectorised index → (host, proto, port) for one TargetSpace (host = j % H)."""

    def __init__(self, targets: TargetSet, ports: PortSet) -> None:
        self.targets = targets
        self.n_hosts = targets.size
        ranges = [("tcp", lo, hi) for lo, hi in ports.tcp]
        ranges += [("udp", lo, hi) for lo, hi in ports.udp]
        counts = np.array([hi - lo + 1 for _, lo, hi in ranges], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.lows = np.array([lo for _, lo, _ in ranges], dtype=np.int64)
        self.protos = [p for p, _, _ in ranges]
        self.proto_codes = np.array([0 if p == "tcp" else 1 for p in self.protos], dtype=np.int32)
        # Port index -> port and proto code as tables (at most 131,072 entries, TCP and
        # UDP): a gather per record, not a binary search over the ranges (the top 100
        # ports are 90 ranges: ~4% of the flush thread at a /18).
        r = np.repeat(np.arange(len(ranges)), counts)
        self._port = (self.lows[r] + (np.arange(len(r)) - self.starts[r])).astype(np.uint16)
        self._proto = self.proto_codes[r]

    def split(self, index: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(host index, or None when there is one host; port index)."""
        if self.n_hosts == 1:
            return None, index
        return split_index(index, self.n_hosts)

    def port_of(self, pidx: np.ndarray) -> tuple[np.ndarray | int, np.ndarray]:
        """(proto code, as one int when every index has the same; uint16 port)."""
        port = np.empty(len(pidx), np.uint16)
        if len(self.starts) == 1:  # one range ("-", "1-1000"): no search, no int64 temporary
            np.add(pidx, self.lows[0], out=port, casting="unsafe")
            return int(self.proto_codes[0]), port
        at = pidx.astype(np.intp, copy=False)
        np.take(self._port, at, out=port)
        if not self.proto_codes.any():  # TCP only: one code
            return 0, port
        return self._proto[at], port


class RecordSink:
    """Collects verdict records and hands them to ``on_batch`` as ports RecordBatches.

    ``keep``: "all" rows, "responsive" (drop no-response) or "open" only. Counters are
    updated in bulk as records arrive, so the engines' hot loops stay small.

    A batch goes out every ``batch_rows`` records or once its oldest record is ``max_age``
    seconds old (LIVE_AGE unless set; None: size only). ``flush_if_older`` lets a timer
    thread (the scan's poller, a checkpoint) enforce the age when no record arrives. So
    PortFound events, ``Scan.result`` and a panel's table lag a big scan by half a second,
    not by 64K verdicts; a flush costs about a millisecond and its rows are kept anyway.
    After ``on_batch`` returns (the part file is written), ``on_flushed`` gets the indices
    of every record flushed, kept or not: what a checkpoint may count as done.
    """

    def __init__(
        self,
        *,
        targets: TargetSet,
        ports: PortSet,
        scan_id: str,
        decode: Decode,
        on_batch: Callable[[pa.RecordBatch], None],
        counters: Counters,
        keep: str = "all",
        batch_rows: int = FLUSH_ROWS,
        max_age: float | None = LIVE_AGE,
        on_flushed: Callable[[np.ndarray], None] | None = None,
        decode_udp: Decode | None = None,
        tally: HostTally | None = None,
    ) -> None:
        self.map = PortMap(targets, ports)
        self.chunk = STREAM_CHUNK if tally is not None else CHUNK  # rows per batch
        #: Per-host counts of every record flushed (kept or not), for a scan that holds
        #: only some of its rows in memory: its hosts table comes from here (hosttally).
        self.tally = tally
        self.decode_udp = decode_udp  # UDP rows' codes (see UDP_CODES); None: ``decode``'s
        self.targets = targets
        self.scan_id = scan_id
        self.decode = decode
        self.on_batch = on_batch
        self.counters = counters
        self.keep = keep
        self.batch_rows = batch_rows
        self.max_age = max_age
        self.on_flushed = on_flushed
        self.oldest = 0.0  # monotonic time the first record now buffered arrived
        # Records fed and not yet flushed: full CHUNK-row blocks, then ``_tail`` (its first
        # ``_filled`` rows); ``buffered`` bytes in all. See _append and _convert.
        self._blocks: deque[np.ndarray] = deque()
        self._tail: np.ndarray | None = None
        self._filled = 0
        self.buffered = 0
        self.lock = threading.Lock()
        self.worker_values: dict[tuple[int, int], int] = {}  # (worker, kind) -> value
        self.peak_rss: list[int] = []
        self._verdicts: dict[int, tuple[str, str]] = {}
        self._states = _Vocab(schema.STATES)  # nmap's order: what the result table uses
        self._reasons = _Vocab()  # in the order met
        self._v4 = V4Text(targets) if targets.families == {4} else None
        self._one_host_cols: tuple[pa.Array, pa.Array | None, pa.Array] | None = None
        self._writing = threading.Lock()  # see flush()
        self._due = threading.Condition()
        self._flusher: threading.Thread | None = None
        self._stopping = False
        self._flush_error: BaseException | None = None
        self._on_error: Callable[[BaseException], None] | None = None

    # -- producers -------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray, worker: int = 0) -> None:
        """Whole records (len a multiple of RECORD.size), from an engine or a worker's pipe."""
        recs = np.frombuffer(data, dtype=DTYPE)  # copied into the buffer below
        control = recs["code"] < NO_RESPONSE
        if control.any():
            for rec in recs[control].tolist():
                self._control(worker, rec[0], rec[1])
            recs = recs[~control]
        if len(recs) == 0:
            return
        codes = recs["code"]
        c = self.counters
        c.done += len(recs)
        c.received += int((codes != NO_RESPONSE).sum())
        c.open += int((codes == 0).sum())
        with self.lock:
            if not self.buffered:
                self.oldest = time.monotonic()
            self._append(recs)
            due = self.buffered >= self.batch_rows * DTYPE.itemsize or (
                self.max_age is not None and time.monotonic() - self.oldest >= self.max_age
            )
            if not due:
                return
            flusher = self._flusher
            # BACKPRESSURE: a flusher that falls behind gets help from the feeder, so the
            # buffer stays bounded (BEHIND batches) whatever the disk does.
            if flusher is not None and self.buffered < BEHIND * self.batch_rows * DTYPE.itemsize:
                with self._due:
                    self._due.notify()
                return
        self.flush()

    def _append(self, recs: np.ndarray) -> None:
        """``recs`` into the buffer (hold ``lock``), a block of ``chunk`` rows at a time.

        BLOCKS, NOT ONE GROWING BUFFER: a block is one allocation of its final size (above
        the mmap threshold: pages resident only once written, all returned at its free),
        and _convert frees each as soon as its batch exists. A growing bytearray is
        reallocated as it grows, lands on the heap, and is held whole until converted."""
        at, n, chunk = 0, len(recs), self.chunk
        while at < n:
            if self._tail is None:
                self._tail, self._filled = np.empty(chunk, DTYPE), 0
            k = min(chunk - self._filled, n - at)
            self._tail[self._filled : self._filled + k] = recs[at : at + k]
            self._filled += k
            at += k
            if self._filled == chunk:
                self._blocks.append(self._tail)
                self._tail = None
        self.buffered += recs.nbytes

    def _control(self, worker: int, value: int, kind: int) -> None:
        if kind == PEAK_RSS:
            self.peak_rss.append(value)
            return
        self.worker_values[(worker, kind)] = value
        total = sum(v for (_, k), v in self.worker_values.items() if k == kind)
        if kind == SENT:
            self.counters.sent = total
        elif kind == RETRIES:
            self.counters.retries = total
        elif kind == SKIPPED:
            self.counters.skipped = total

    def flush(self) -> None:
        # Two locks: ``lock`` guards the buffer only (a feeder waits for a swap, never
        # for a conversion); ``_writing`` orders the conversions and guards what they
        # update (tally, vocabularies, the builder behind ``on_batch``).
        with self._writing:
            with self.lock:
                if not self.buffered:
                    return
                # Hand the buffer over rather than copy it: it is the biggest thing held.
                blocks, self._blocks = self._blocks, deque()
                if self._tail is not None:
                    blocks.append(self._tail[: self._filled])
                    self._tail = None
                self.buffered = 0
            self._convert(blocks)

    def flush_if_older(self, age: float | None = None) -> None:
        """Flush when the oldest buffered record is ``age`` (default ``max_age``) seconds
        old. Any thread may call it."""
        if age is None:
            if self.max_age is None:
                return
            age = self.max_age
        with self.lock:
            due = bool(self.buffered) and time.monotonic() - self.oldest >= age
        if not due:
            return
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            # The flush thread does it: a timer thread (the poller) must not wait for a
            # conversion, and its ticks stay on time (measured: up to 4 s late otherwise).
            with self._due:
                self._due.notify()
            return
        self.flush()

    # -- the flush thread ------------------------------------------------------------------
    def start_flusher(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Convert and write batches on a thread of the sink's own, from now until
        ``stop_flusher``: ``feed`` then only appends to the buffer.

        WHY. A SYN or UDP scan feeds the sink from its receive thread; a flush there
        (numpy to Arrow, the Parquet part written, the held table appended) stalled the
        receiver for milliseconds at a time while replies queued in the capture ring,
        and the ring's backpressure then held the transmit threads back. pyarrow drops
        the GIL while it encodes and writes, so on another thread that work overlaps
        the receiver's."""
        if self._flusher is not None:
            return
        self._on_error = on_error
        self._stopping = False
        self._flusher = threading.Thread(target=self._flush_loop, name="prtip-sink-flush",
                                         daemon=True)
        self._flusher.start()

    def stop_flusher(self) -> None:
        """Stop the flush thread; what is buffered waits for the next ``flush``."""
        flusher = self._flusher
        if flusher is None:
            return
        with self._due:
            self._stopping = True
            self._due.notify()
        flusher.join()
        self._flusher = None
        err, self._flush_error = self._flush_error, None
        if err is not None and self._on_error is None:  # (else on_error has heard it)
            raise err

    def _flush_loop(self) -> None:
        while True:
            with self._due:
                if not self._stopping:
                    self._due.wait((self.max_age or LIVE_AGE) / 2)
                if self._stopping:
                    return
            try:
                with self.lock:
                    full = self.buffered >= self.batch_rows * DTYPE.itemsize
                if full:
                    self.flush()
                else:
                    self.flush_if_older()
            except BaseException as exc:  # noqa: BLE001 -- e.g. a full disk
                self._flush_error = exc  # stop_flusher raises it, on_error hears it now
                if self._on_error is not None:
                    self._on_error(exc)
                return

    def _convert(self, blocks: deque[np.ndarray]) -> None:
        """``blocks`` (``chunk`` rows each, the last maybe fewer) to batches of as many.

        FREED AS CONVERTED: each block of records is dropped once its batch exists, so a
        flush holds its batches and one block, not its batches and every record (a 65,535-
        port scan flushes once, at its end: the records were ~25 B a port at that peak).
        Converted a block at a time, numpy's temporaries stay bounded by a block, not by
        the flush (~100 B a row while a batch is built, against ~40 B once built)."""
        done: list[np.ndarray] = []  # the indices for on_flushed
        kept: list[np.ndarray] = []  # rows that ``keep`` keeps, when it drops some
        while blocks:
            recs = blocks.popleft()  # the block's last reference
            # DECODED ONCE: the tally and the batch need the same host, port and verdict
            # indices of every record (they were computed twice: ~8% of the flush thread).
            dec = self._decode(recs) if self.tally is not None or self.keep == "all" else None
            if self.tally is not None:
                self._tally(recs, dec)
            if self.on_flushed is not None:
                done.append(recs["index"].copy())
            if self.keep == "all":
                self.on_batch(self.to_batch(recs, dec))
            elif self.keep == "open":
                kept.append(recs[recs["code"] == 0])
            else:  # "responsive"
                kept.append(recs[recs["code"] != NO_RESPONSE])
            del recs, dec
        if kept:  # (few rows) batches of ``chunk`` kept rows, as unfiltered ones
            rows = np.concatenate(kept)
            del kept
            for at in range(0, len(rows), self.chunk):
                self.on_batch(self.to_batch(rows[at : at + self.chunk]))
        if self.on_flushed is not None:
            self.on_flushed(np.concatenate(done) if done else np.zeros(0, np.int64))

    def _decode(self, recs: np.ndarray) -> _Decoded:
        """Each record's host index (None: one host), proto, port, state and reason index."""
        host, pidx = self.map.split(recs["index"])
        proto, port = self.map.port_of(pidx)
        del pidx
        state, reason = self._verdict_indices(self._proto_codes(recs["code"], proto))
        return host, proto, port, state, reason

    def _tally(self, recs: np.ndarray, dec: _Decoded | None) -> None:
        assert self.tally is not None
        host, _, _, state, reason = self._decode(recs) if dec is None else dec
        self.tally.add(host, state, reason, recs["rtt_ms"], recs["t_us"],
                       recs["code"] != NO_RESPONSE)

    def hosts_table(self) -> pa.Table:
        """The hosts rows of every record flushed so far (needs a ``tally``)."""
        if self.tally is None:
            raise ValueError("hosts_table needs a RecordSink made with a HostTally")
        with self._writing:
            return self.tally.table(self.targets, self.scan_id, list(self._reasons.words))

    # -- conversion ------------------------------------------------------------------------
    def to_batch(self, recs: np.ndarray, dec: _Decoded | None = None) -> pa.RecordBatch:
        """A schema.PORTS RecordBatch for ``recs`` (``dec``: their ``_decode``, if made),
        built from buffers.

        Dictionaries are fixed (states in schema order, protos tcp/udp, reasons in the order
        this sink first met them), so batches share them and the finish sort needs no
        re-encoding; with one host or one port range no per-row index array is made.
        """
        n = len(recs)
        zero = _arrow.zeros(n)
        host, proto, port, state_idx, reason_idx = self._decode(recs) if dec is None else dec
        del dec
        if host is None:
            host_col, name_col, family = self._one_host(n)
        elif self._v4 is not None and not self.targets.has_hostnames:
            # IPv4 ONLY: the hosts' text by Arrow kernels, not a Python call per host (6 us
            # a row at a /15's 65K distinct hosts a flush: the scan's limit), from a table
            # of every host's text (V4Text.column).
            host_col, name_col = self._v4.column(host), None
            family = _numeric(np.full(n, 4, np.uint8), pa.uint8())
        else:
            host_text: pa.Array | None = None
            uhost, hinv = np.unique(host, return_inverse=True)
            del host
            take = _index_array(hinv)
            if self._v4 is not None:
                host_text = self._v4.text(uhost)
                family = _numeric(np.full(n, 4, np.uint8), pa.uint8())
            else:
                addrs = [self.targets.address(int(h)) for h in uhost]
                fams = np.array([self.targets.family(int(h)) for h in uhost], dtype=np.uint8)
                family = _numeric(fams[hinv], pa.uint8())
                host_text = cv.plain_strings(addrs)
            del hinv
            names = ([self.targets.hostname(a) for a in host_text.to_pylist()]
                     if self.targets.has_hostnames else [None])
            host_col = host_text.take(take)
            name_col = cv.plain_strings(names).take(take) if any(names) else None
        proto_idx = (
            pa.Array.from_buffers(pa.int32(), n, [None, zero]) if isinstance(proto, int)
            and proto == 0 else _index_array(np.broadcast_to(proto, (n,)))
        )
        answered = recs["code"] != NO_RESPONSE
        ttl = recs["ttl"]
        cols = {
            "scan_id": _arrow.constant_dict(self.scan_id, n, zero),
            "host": host_col,
            "hostname": name_col if name_col is not None else _arrow.null_array(
                pa.string(), n, zero),
            "family": family,
            "proto": pa.DictionaryArray.from_arrays(proto_idx, _PROTOS),
            "port": _numeric(port, pa.uint16()),
            "state": pa.DictionaryArray.from_arrays(_index_array(state_idx), self._states.array),
            "reason": pa.DictionaryArray.from_arrays(
                _index_array(reason_idx), self._reasons.array
            ),
            "rtt_ms": _numeric(recs["rtt_ms"], pa.float32(), answered),
            "ttl": _numeric(ttl, pa.uint8(), ttl != 0),
            "first_seen": _numeric(recs["t_us"], _FIRST_SEEN),
        }
        arrays = [
            cols[f.name] if f.name in cols else _arrow.null_array(f.type, n, zero)
            for f in schema.PORTS
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=schema.PORTS)

    def _one_host(self, n: int) -> tuple[pa.Array, pa.Array | None, pa.Array]:
        """host, hostname (None: it has none) and family columns of ``n`` rows of a scan's
        one host: slices of arrays built once.

        ONE HOST: its address as a plain string per row (the schema's) costs 13 B a row in
        every batch held until the scan ends, the biggest column of a 65,535-port scan;
        slices of one array share its buffers, so every batch costs none of it."""
        cached = self._one_host_cols
        if cached is None or len(cached[0]) < n:
            idx = pa.Array.from_buffers(pa.int32(), n, [None, _arrow.zeros(n)])
            text = cv.plain_strings([self.targets.address(0)])
            name = self.targets.hostname(text[0].as_py()) if self.targets.has_hostnames else None
            fam = np.full(n, self.targets.family(0), np.uint8)
            cached = self._one_host_cols = (
                text.take(idx), cv.plain_strings([name]).take(idx) if name else None,
                _numeric(fam, pa.uint8()))
        host, name, family = cached
        return host.slice(0, n), None if name is None else name.slice(0, n), family.slice(0, n)

    def _verdict_indices(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per record, the index of its state and of its reason in this sink's dictionaries,
        through lookup tables over the (small) span of codes: no sort, no per-row Python."""
        lo, hi = int(codes.min()), int(codes.max())
        offset: np.ndarray
        if hi - lo < 1 << 16:
            offset = codes - np.int32(lo)
            slots = np.flatnonzero(np.bincount(offset, minlength=hi - lo + 1))
            values = slots + lo
        else:  # codes far apart (no engine here makes such): sort instead
            values, offset = np.unique(codes, return_inverse=True)
            slots = np.arange(len(values))
        state_lut = np.zeros(int(slots[-1]) + 1, np.int32)
        reason_lut = np.zeros(int(slots[-1]) + 1, np.int32)
        for slot, code in zip(slots.tolist(), values.tolist(), strict=True):
            state, reason = self._verdict(code)
            state_lut[slot] = self._states.index(state)
            reason_lut[slot] = self._reasons.index(reason)
        return state_lut[offset], reason_lut[offset]

    def _proto_codes(self, codes: np.ndarray, proto: np.ndarray | int) -> np.ndarray:
        if self.decode_udp is None or (isinstance(proto, int) and proto == 0):
            return codes
        return np.where(np.asarray(proto) == 1, codes + np.int32(UDP_CODES), codes).astype(
            np.int32)

    def _verdict(self, code: int) -> tuple[str, str]:
        v = self._verdicts.get(code)
        if v is None and self.decode_udp is not None and code >= UDP_CODES + NO_RESPONSE:
            v = self._verdicts[code] = self.decode_udp(code - UDP_CODES)
        if v is None:
            v = self._verdicts[code] = (
                NO_ANSWER if code == NO_RESPONSE else self.decode(code)
            )
        return v


class _Vocab:
    """A dictionary that only grows: batches made earlier keep a prefix of it."""

    def __init__(self, words: tuple[str, ...] = ()) -> None:
        self.words = {w: i for i, w in enumerate(words)}
        self.array = cv.plain_strings(list(self.words))

    def index(self, word: str) -> int:
        i = self.words.get(word)
        if i is None:
            i = self.words[word] = len(self.words)
            self.array = cv.plain_strings(list(self.words))
        return i


def _index_array(values: np.ndarray) -> pa.Array:
    arr = np.ascontiguousarray(values, dtype=np.int32)
    return pa.Array.from_buffers(pa.int32(), len(arr), [None, pa.py_buffer(arr)])


def _numeric(values: np.ndarray, typ: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    arr = np.ascontiguousarray(values)  # a field of the record array: one contiguous copy
    validity = None
    nulls = 0
    if valid is not None and not valid.all():
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = int((~valid).sum())
    return pa.Array.from_buffers(typ, len(arr), [validity, pa.py_buffer(arr)], null_count=nulls)
