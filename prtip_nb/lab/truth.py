"""The lab's ground truth as a ``ports`` table: what a perfect scan of the lab reports.

Conventions where a scanner has a choice (so comparisons know what to expect):

- ``reason`` is what a SYN scan sees: ``syn-ack`` for open TCP, ``reset`` for closed TCP,
  ``udp-response`` for the UDP echo. A connect scan reports ``conn-refused`` where this
  says ``reset``.
- ``service`` follows nmap's names (``http``, ``https``, ``ssh``, ``smtp``, ``ftp``,
  ``echo``); plain listeners speak nothing, so their service, product and banner are null.
- ``banner`` is the first line a service sends, without its CRLF; null if it waits.
- TLS columns are filled for ``https`` only: subject and issuer in RFC 4514 form
  (``CN=prtip-lab.test``), ``tls_san`` as plain values (``["prtip-lab.test", "127.0.0.1"]``).
  ``tls_version`` is null: it depends on what the client offers.
- ``ttl``, ``rtt_ms`` and ``first_seen`` are null: they are measurements, not truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from prtip_nb.lab.services import KINDS
from prtip_nb.lab.tlscert import LabCert
from prtip_nb.results import schema

SCAN_ID = "lab"
_REASON = {("tcp", "open"): "syn-ack", ("tcp", "closed"): "reset", ("udp", "open"): "udp-response"}


def truth_table(
    host: str, family: int, ports: Sequence[tuple[str, str, int]], cert: LabCert | None
) -> pa.Table:
    """One row per lab port; ``ports`` holds (kind, proto, port), kind "closed" or a KINDS key."""
    cols: dict[str, list[object]] = {name: [] for name in schema.PORTS.names}
    for kind_name, proto, port in ports:
        state = "closed" if kind_name == "closed" else "open"
        kind = KINDS.get(kind_name)
        tls = cert if kind is not None and kind.tls else None
        row: dict[str, object] = {
            "scan_id": SCAN_ID,
            "host": host,
            "family": family,
            "proto": proto,
            "port": port,
            "state": state,
            "reason": _REASON[proto, state],
            "service": kind and kind.service,
            "tunnel": "ssl" if kind is not None and kind.tls else None,
            "product": kind and kind.product,
            "version": kind and kind.version,
            "extrainfo": kind and kind.extrainfo,
            "banner": kind and kind.banner,
            "tls_subject": tls and tls.subject,
            "tls_issuer": tls and tls.issuer,
            "tls_san": list(tls.san) if tls else None,
            "tls_not_after": tls and tls.not_after,
            "tls_self_signed": True if tls else None,
        }
        for name, values in cols.items():
            values.append(row.get(name))
    arrays = [pa.array(cols[f.name], type=f.type) for f in schema.PORTS]
    return schema.conform(pa.Table.from_arrays(arrays, schema=schema.PORTS), "ports")
