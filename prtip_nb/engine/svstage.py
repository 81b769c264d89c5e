"""The scan's ``-sV`` stage: service detection on the open TCP ports a scan found.

``Scan._run`` calls ``run_service_stage(scan)`` after the port scan when
``config.service`` is set. Results go three ways, as they arrive:

- the ports table, through ``ResultBuilder.add_services`` (service, product, version,
  extrainfo, banner and the ``tls_*`` columns), merged at ``finish``;
- a ``ServiceDetected`` event per port, whose ``details`` carry what has no column
  (HTTP status and title; TLS cipher, ALPN, SHA-256 fingerprint, key, signature algorithm,
  not-before; notes such as "read cap reached"); a ``CertificateFound`` per certificate;
- a ``ScanWarning`` per host flagged as a tarpit.

PSEUDO-SERVICES (``verify``, on by default with -sV). A host open on far more ports than
real services are (``tarpit_suspects``) gets a sample of its ports checked, one connection
deadline each; if nearly all say nothing (``service.TARPIT_SILENT``) its ``hosts`` row says
``pseudo_services=True`` with a ``pseudo_reason``, its other ports are skipped, and its
silent ports get no service columns (nmap calls such ports tcpwrapped, or guesses from the
port number); a sampled port that did speak keeps what it said. Every port checked gets
``verified`` (data or a TLS handshake came back) and
``handshakes`` (connections opened). ``verify=True`` without -sV runs only that check,
with NULL, GetRequest and the TLS handshake as the hellos.

``service_probes="nmap"`` (or a path; the CLI's ``--versiondb``) matches with an installed nmap's
``nmap-service-probes`` instead of prtip_nb's own database (see ``nmapdb``).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..service.service import DEADLINE_S, ServiceScanner
from .events import CertificateFound, ScanWarning, ServiceDetected, StageChanged

if TYPE_CHECKING:
    import pyarrow as pa

    from ..service.outcome import ServiceResult
    from .scan import Scan

#: A host is a pseudo-service suspect when more than this share of at least
#: ``SHARE_MIN_PORTS`` probed TCP ports is open, or all of at least ``ALL_MIN_PORTS``.
PSEUDO_OPEN_SHARE = 0.5
SHARE_MIN_PORTS = 100
ALL_MIN_PORTS = 20
VERIFY_INTENSITY = 1  # --verify without -sV: NULL, GetRequest and the TLS handshake
VERIFY_DEADLINE_S = 3.0


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
    """Hosts open on far more ports than real services are: see PSEUDO_OPEN_SHARE."""
    counts = Counter(h for h, _ in targets)
    p = probed_per_host
    return {
        h for h, n in counts.items()
        if (p >= ALL_MIN_PORTS and n >= p) or (p >= SHARE_MIN_PORTS and n > PSEUDO_OPEN_SHARE * p)
    }  # fmt: skip


def _reason(host: str, results: list[ServiceResult], probed: int) -> str:
    checked = [r for r in results if r.handshakes]
    silent = sum(r.silent for r in checked)
    return (f"{len(results)}/{probed} scanned TCP ports open; "
            f"{silent}/{len(checked)} checked said nothing")  # fmt: skip


def run_service_stage(scan: Scan) -> None:
    """Detect services (-sV) or only check (--verify) ``scan``'s open TCP ports.

    Runs on the scan's own thread. With the check on (``verify``: default with -sV), each
    port gets ``verified``/``handshakes`` and each host checked ``pseudo_services``; the
    silent ports of a flagged host keep no service columns, and scripts skip them.
    """
    builder = scan.builder
    assert builder is not None
    sid = scan.scan_id or ""
    t0 = scan.started_at
    cfg = scan.config
    verify = cfg.service if cfg.verify is None else cfg.verify
    detect = cfg.service

    def now() -> float:
        return time.monotonic() - t0

    scan.bus.publish(StageChanged(now(), sid, "service" if detect else "verify"))
    targets = open_tcp(builder.snapshot().tables["ports"])
    if not targets:
        return
    shards = cfg.shard[1]
    probed = scan.ports.count("tcp") // shards
    suspects = tarpit_suspects(targets, probed)
    held: dict[str, list[ServiceResult]] = {h: [] for h in suspects}
    checks = ("verified", "handshakes")

    def row(r: ServiceResult, pseudo: bool = False) -> dict[str, Any]:
        out = r.row()
        # No services on a pseudo host's silent ports (what spoke there did speak);
        # none looked for by --verify alone.
        if (pseudo and not r.verified) or not detect:
            out = {k: out[k] for k in ("host", "proto", "port", *checks)}
        if not verify:
            for k in checks:
                out.pop(k)
        return out

    def on_result(r: ServiceResult) -> None:
        if r.host in held:
            held[r.host].append(r)  # written once the host's verdict is in
        else:
            builder.add_services([row(r)])
        if not detect:
            return
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
    source = cfg.service_probes  # "nmap", or a path to nmap's file
    if source:
        from ..service.nmapdb import DEFAULT_PATH, load_nmap_service_probes

        db = load_nmap_service_probes(DEFAULT_PATH if source == "nmap" else source)
    scanner = ServiceScanner(
        db=db,
        intensity=cfg.version_intensity if detect else VERIFY_INTENSITY,
        deadline=DEADLINE_S if detect else VERIFY_DEADLINE_S,
        cancel=scan.cancel_event,
        on_result=on_result,
        suspects=suspects,
    )
    scanner.scan(targets)
    flagged = set(scanner.tarpits)
    for host, results in held.items():
        builder.add_services([row(r, host in flagged) for r in results])
    if verify:
        builder.add_host_columns({
            h: {"pseudo_services": h in flagged,
                "pseudo_reason": _reason(h, held[h], probed) if h in flagged else None}
            for h, _ in targets
        })  # fmt: skip
    for host in scanner.tarpits:
        scan.bus.publish(ScanWarning(
            now(), sid, f"{host} answers on nearly every port and says nothing: a tarpit? "
            "service detection stopped on it after a sample of its ports",
        ))  # fmt: skip
