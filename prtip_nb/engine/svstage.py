"""The scan's ``-sV`` stage: service detection on the open TCP ports a scan found.

``Scan._run`` calls ``run_service_stage(scan)`` after the port scan when
``config.service`` is set. Results go three ways, as they arrive:

- the ports table, through ``ResultBuilder.add_services`` (service, product, version,
  extrainfo, banner and the ``tls_*`` columns), merged at ``finish``;
- a ``ServiceDetected`` event per port, whose ``details`` carry what has no column
  (HTTP status and title; TLS cipher, ALPN, SHA-256 fingerprint, key, signature algorithm,
  not-before; notes such as "read cap reached"); a ``CertificateFound`` per certificate;
- a ``ScanWarning`` per host flagged as a tarpit.

``extra={"service_probes": "nmap"}`` (or a path) matches with an installed nmap's
``nmap-service-probes`` instead of prtip_nb's own database (see ``nmapdb``).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from ..service.service import TARPIT_MIN_PORTS, ServiceScanner
from .events import CertificateFound, ScanWarning, ServiceDetected, StageChanged

if TYPE_CHECKING:
    import pyarrow as pa

    from ..service.outcome import ServiceResult
    from .scan import Scan

#: A host with at least this share of its probed TCP ports open is a tarpit suspect.
TARPIT_OPEN_SHARE = 0.9


def open_tcp(ports: pa.Table) -> list[tuple[str, int]]:
    """(host, port) of every open TCP row, in host/port order."""
    import pyarrow.compute as pc

    from ..results._convert import scalar_str

    rows = ports.filter(
        pc.and_(
            pc.equal(ports["state"].cast("string"), scalar_str("open")),
            pc.equal(ports["proto"].cast("string"), scalar_str("tcp")),
        )
    ).select(["host", "port"])
    return sorted(zip(rows["host"].to_pylist(), rows["port"].to_pylist(), strict=True))


def tarpit_suspects(targets: list[tuple[str, int]], probed_per_host: int) -> set[str]:
    """Hosts that answered on (nearly) every port they were asked about."""
    counts = Counter(h for h, _ in targets)
    floor = max(TARPIT_MIN_PORTS, TARPIT_OPEN_SHARE * probed_per_host)
    return {h for h, n in counts.items() if n >= floor}


def run_service_stage(scan: Scan) -> None:
    """Detect services on ``scan``'s open TCP ports; runs on the scan's own thread."""
    builder = scan.builder
    assert builder is not None
    sid = scan.scan_id or ""
    t0 = scan.started_at

    def now() -> float:
        return time.monotonic() - t0

    scan.bus.publish(StageChanged(now(), sid, "service"))
    targets = open_tcp(builder.snapshot().tables["ports"])
    if not targets:
        return
    shards = scan.config.shard[1]
    suspects = tarpit_suspects(targets, scan.ports.count("tcp") // shards)

    def on_result(r: ServiceResult) -> None:
        builder.add_services([r.row()])
        t = now()
        scan.bus.publish(ServiceDetected(
            t, sid, r.host, r.proto, r.port, r.service, r.product, r.version, r.extrainfo,
            r.details(),
        ))  # fmt: skip
        cert = r.tls.cert if r.tls is not None else None
        if cert is not None:
            scan.bus.publish(CertificateFound(
                t, sid, r.host, r.port, cert.subject, cert.issuer, cert.not_after.isoformat()
            ))  # fmt: skip

    db = None
    source = scan.config.extra.get("service_probes")  # "nmap", or a path to nmap's file
    if source:
        from ..service.nmapdb import DEFAULT_PATH, load_nmap_service_probes

        db = load_nmap_service_probes(DEFAULT_PATH if source == "nmap" else source)
    scanner = ServiceScanner(
        db=db,
        intensity=scan.config.version_intensity,
        cancel=scan.cancel_event,
        on_result=on_result,
        suspects=suspects,
    )
    scanner.scan(targets)
    for host in scanner.tarpits:
        scan.bus.publish(ScanWarning(
            now(), sid, f"{host} answers on nearly every port and says nothing: a tarpit? "
            "service detection stopped on it after a sample of its ports",
        ))  # fmt: skip
