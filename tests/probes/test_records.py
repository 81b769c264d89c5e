"""probes.records: emit_many packs what emit packs, stamped once (the connect engine hands
over a pass's answers with it)."""

from __future__ import annotations

import time

import numpy as np

from prtip_nb.probes.records import DTYPE, RecordBuffer


def test_emit_many_packs_what_emit_packs_with_one_timestamp() -> None:
    verdicts = [(7, 0, 0.000012), (3, 111, 0.25), (1 << 40, 113, 1.5)]
    one: list[bytes] = []
    many: list[bytes] = []
    a, b = RecordBuffer(one.append), RecordBuffer(many.append)
    before = time.time_ns() // 1000
    for v in verdicts:
        a.emit(*v)
    b.emit_many(verdicts)
    a.flush()
    b.flush()
    after = time.time_ns() // 1000
    x, y = np.frombuffer(b"".join(one), DTYPE), np.frombuffer(b"".join(many), DTYPE)
    for field in ("index", "code", "rtt_ms", "ttl"):
        assert (x[field] == y[field]).all(), field
    assert y["index"].tolist() == [7, 3, 1 << 40] and y["ttl"].tolist() == [0, 0, 0]
    assert np.allclose(y["rtt_ms"], [0.012, 250.0, 1500.0])
    assert len(set(y["t_us"].tolist())) == 1 and before <= y["t_us"][0] <= after


def test_emit_many_flushes_at_the_size_limit() -> None:
    got: list[bytes] = []
    buf = RecordBuffer(got.append, max_records=4, max_age=60.0)
    buf.emit_many([(i, 111, 0.001) for i in range(3)])
    assert got == []  # below the limit: held
    buf.emit_many([(i, 111, 0.001) for i in range(3, 6)])
    assert len(got) == 1 and len(got[0]) == 6 * DTYPE.itemsize  # all six, in one chunk
