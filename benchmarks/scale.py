"""The scale rehearsal (issue 20): 198.18.0.0/15 x the top 100 ports, 13.1M SYN probes.

``scale-15`` runs, in one private namespace, against one RangeLab answering for the whole
/15 (80 and 443 open everywhere; a dropped /24 and 1,024 seeded hosts that drop
everything, so not every host answers alike):

1. **The kernel's ceiling** on the same link: a small C program (written and compiled
   with gcc here, into a temp dir) sends the same SYNs -- every (address, port) of the
   /15, host-major -- through a raw IPv4 socket (IPPROTO_RAW: layer 3, the kernel routes)
   in sendmmsg batches of 256, and nothing else: no capture, no Python. It is bounded in
   count (``CEILING_PROBES``) and time (``CEILING_S``), and sends to the lab's prefix only
   (the program refuses any other).
2. **The scan**, whole process: ``prtip-nb scan -sS -Pn -n --top-ports 100 -T4 -o DIR``
   with no ``--rate`` (the adaptive rate). Its own "Done: ... in X s" gives the pps and
   the fraction of the ceiling; the harness gives the peak RSS of the process tree.
   Exactness: RangeTruth.check on the dataset written (every row, read back from disk).
   Marginal memory per probe: the slope of the scan's RSS over its sends (telemetry);
   a /20 (409,600 probes, below hold="auto"'s million: every row held) for comparison.
3. **nmap -sS -T4** on a /24 of answering hosts (no dropped host in it), and prtip-nb on
   the same /24, alternately: the ratio of their times, and nmap's pps against ours.
4. **Analysis at that size**, each step in its own process (its peak RSS is its own):
   ``pn.read_scans(root, scan_id, state="open")`` (pushed down), a ``pn.sql`` group-by
   over the whole dataset, and ``pn.diff`` of two such scans (the second of a lab with
   8080 opened too and other dropping hosts).

(80 and 443 open everywhere; 128 seeded hosts that drop everything: see RETRIES.)

The machine is shared (2 cores): the ceiling is measured right before each scan.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import compile_c, save, timed

RANGE = "198.18.0.0/15"
SMALL = "198.18.0.0/20"  # the marginal-memory reference
OPEN = (80, 443)
DROP_COUNT, SEED = 128, 20  # hosts that drop everything, seeded (see RETRIES below)
N_PORTS = 100
# RETRIES: -T4 retries every silent probe (up to 6 rounds) and the adaptive rate holds a
# retry round of silent probes at its floor-ish rate (no replies to grow on). With a
# dropped /24 and 1,024 more dropping hosts (128K silent probes) the first run was still
# retrying 3 minutes after its last reply; 128 hosts (12,800 silent probes) usually keep
# the run in budget (one run spent minutes at ~100 probes/s in round 2 even so).
CEILING_PROBES = 6_000_000  # bounds: whichever comes first
CEILING_S = 20.0
_DONE = re.compile(r"^Done: .* in ([0-9.]+) s\.", re.M)
_NMAP_S = re.compile(r"scanned in ([0-9.]+) seconds")

# THE CEILING: the same SYN (IPv4 + TCP with the MSS option, 44 bytes) the scanner sends,
# patched per probe (address, port, sequence, checksums) in a table of 256 messages.
_CEILING_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 256
#define PKT 44

static uint16_t csum(const uint8_t *p, int n, uint32_t sum) {
    for (int i = 0; i + 1 < n; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: ceiling SRC NET NHOSTS PORTS_CSV MAX_PROBES MAX_SECONDS\n");
        return 2;
    }
    uint32_t src = ntohl(inet_addr(argv[1]));
    uint32_t net = ntohl(inet_addr(argv[2]));
    uint64_t nhosts = strtoull(argv[3], 0, 10);
    /* SAFETY: 198.18.0.0/15 (RFC 2544) only, whatever the caller passes. */
    if ((net & 0xfffe0000u) != 0xc6120000u || nhosts == 0 || nhosts > 131072
        || ((net - 0xc6120000u) + nhosts) > 131072) {
        fprintf(stderr, "ceiling: targets must lie inside 198.18.0.0/15\n");
        return 2;
    }
    static uint16_t ports[65536];
    int nports = 0;
    for (char *t = strtok(argv[4], ","); t && nports < 65536; t = strtok(0, ","))
        ports[nports++] = (uint16_t)atoi(t);
    uint64_t total = nhosts * (uint64_t)nports, max_probes = strtoull(argv[5], 0, 10);
    double max_s = atof(argv[6]);
    if (max_s <= 0 || max_s > 120) { fprintf(stderr, "ceiling: 0 < seconds <= 120\n"); return 2; }
    if (total > max_probes) total = max_probes;

    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW); /* LAYER 3: the kernel routes */
    if (fd < 0) { perror("socket"); return 1; }
    static uint8_t pkts[BATCH][PKT];
    static struct sockaddr_in dst[BATCH];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    for (int i = 0; i < BATCH; i++) {
        uint8_t *p = pkts[i];
        memset(p, 0, PKT);
        p[0] = 0x45; p[3] = PKT; p[8] = 64; p[9] = 6;
        p[12] = src >> 24; p[13] = src >> 16; p[14] = src >> 8; p[15] = src;
        p[20] = 0xb2; p[21] = 0x6f;                       /* source port 45679 */
        p[32] = 6 << 4; p[33] = 0x02; p[34] = 0x04;       /* 24-byte header, SYN, win 1024 */
        p[40] = 2; p[41] = 4; p[42] = 0x05; p[43] = 0xb4; /* MSS 1460 */
        dst[i].sin_family = AF_INET;
        iov[i].iov_base = p; iov[i].iov_len = PKT;
        msgs[i].msg_hdr.msg_iov = &iov[i]; msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &dst[i]; msgs[i].msg_hdr.msg_namelen = sizeof dst[i];
    }
    uint64_t sent = 0, retried = 0;
    double t0 = now(), deadline = t0 + max_s;
    while (sent < total && now() < deadline) {
        int n = (int)((total - sent) < BATCH ? (total - sent) : BATCH);
        for (int i = 0; i < n; i++) {
            uint64_t k = sent + i;
            uint32_t d = net + (uint32_t)(k % nhosts);
            uint16_t port = ports[k / nhosts];
            uint32_t seq = (uint32_t)(k * 2654435761u);
            uint8_t *p = pkts[i];
            p[16] = d >> 24; p[17] = d >> 16; p[18] = d >> 8; p[19] = d;
            p[4] = (seq >> 24) | 1; p[5] = seq >> 16;         /* id set, as the scan does */
            p[10] = p[11] = 0;
            uint16_t c = csum(p, 20, 0); p[10] = c >> 8; p[11] = c;
            p[22] = port >> 8; p[23] = port;
            p[24] = seq >> 24; p[25] = seq >> 16; p[26] = seq >> 8; p[27] = seq;
            p[36] = p[37] = 0;
            uint32_t pseudo = (src >> 16) + (src & 0xffff) + (d >> 16) + (d & 0xffff) + 6 + 24;
            c = csum(p + 20, 24, pseudo); p[36] = c >> 8; p[37] = c;
            dst[i].sin_addr.s_addr = htonl(d);
        }
        int r = sendmmsg(fd, msgs, n, 0);
        if (r < 0) {
            if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR) { retried++; continue; }
            perror("sendmmsg"); return 1;
        }
        sent += (uint64_t)r;
    }
    double dt = now() - t0;
    printf("{\"sent\": %llu, \"send_s\": %.6f, \"pps\": %.1f, \"retried\": %llu}\n",
           (unsigned long long)sent, dt, sent / dt, (unsigned long long)retried);
    return 0;
}
"""


def build_ceiling(directory: Path) -> Path:
    """Write and compile the ceiling program; its path."""
    return compile_c(directory, "ceiling", _CEILING_C, "the kernel ceiling")


def ceiling(exe: Path, prefix: str, ports: list[int]) -> dict[str, Any]:
    """The no-Python sendmmsg rate to ``prefix`` x ``ports`` on this namespace's link."""
    import ipaddress

    from prtip_nb.lab.rangelab import SCANNER4

    net = ipaddress.ip_network(prefix)
    out = subprocess.run(
        [str(exe), SCANNER4, str(net.network_address), str(net.num_addresses),
         ",".join(map(str, ports)), str(CEILING_PROBES), str(CEILING_S)],
        capture_output=True, text=True, timeout=CEILING_S + 30, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _scan(prefix: str, out_dir: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One whole-process prtip-nb scan writing under ``out_dir``: time, memory, scan id."""
    cmd = ["prtip-nb", "scan", "-sS", "-Pn", "-n", "--top-ports", str(N_PORTS), "-T4",
           "--no-progress", "--open", "--stats-every", "10", "-o", str(out_dir), *extra, prefix]
    text: list[str] = []
    r = timed(cmd, "prtip_nb", timeout=3600, capture=text)
    m = _DONE.search(text[0])
    sid = re.search(r"scan_id=(\S+)", text[0])
    note = re.search(r"^Note: (.*)$", text[0], re.M)
    live = _ticks(out_dir / f"scan_id={sid[1]}") if sid else {}
    return {"wall_s": r.wall_s, "scan_s": float(m[1]) if m else float("nan"), **live,
            "peak_rss_mib": r.peak_rss_bytes / 2**20,
            "sum_of_peaks_mib": r.sum_of_peaks_bytes / 2**20,
            "scan_id": sid[1] if sid else None, "note": note[1] if note else None}


def _ticks(scan_dir: Path) -> dict[str, Any]:
    """Live at scale, from the telemetry written: did the poller tick on time (every
    0.25 s), and what rate did the adaptive controller settle at, and why."""
    import pyarrow.dataset as ds

    tel = ds.dataset(scan_dir / "telemetry", format="parquet").to_table().to_pandas()
    gaps = tel["t"].diff().dropna()
    late = tel[tel["t"] >= tel["t"].max() / 2]
    # MARGINAL MEMORY: the RSS slope over the sends while scanning (past the first 5%,
    # when imports, rings and pools are in place), not peak minus peak: the end of a
    # scan (hosts table, report) is a cost per host, not per probe.
    run = tel[(tel["sent"] >= tel["sent"].max() * 0.05) & (tel["sent"] > 0)]
    d_sent = float(run["sent"].iloc[-1] - run["sent"].iloc[0]) if len(run) > 1 else 0.0
    marginal = (float(run["rss_bytes"].iloc[-1] - run["rss_bytes"].iloc[0]) / d_sent
                if d_sent else float("nan"))
    return {"marginal_bytes_per_probe": marginal, "ticks": len(tel),
            "tick_median_s": float(gaps.median()),
            "tick_max_s": float(gaps.max()), "ticks_late_over_0_5s": int((gaps > 0.5).sum()),
            "rate_pps_median_late": float(late["rate_pps"].median()),
            "rate_reasons": tel["rate_reason"].astype(str).value_counts().to_dict(),
            "peak_rss_in_telemetry_mib": float(tel["rss_bytes"].max()) / 2**20}


def _check(lab: Any, out_dir: Path, scan_id: str, ports: list[int]) -> dict[str, int]:
    import pyarrow.dataset as ds

    table = ds.dataset(out_dir / f"scan_id={scan_id}" / "ports", format="parquet").to_table(
        columns=["host", "port", "state"])
    check: dict[str, int] = lab.truth(ports).check(table)
    return check


def _clean_24(lab: Any) -> str:
    """A /24 of the lab in which every host answers (the nmap subset)."""
    import ipaddress

    import numpy as np

    truth = lab.truth(OPEN)
    for i in range(256, 512):  # 198.19.0.0/24 on: not the /20 nor the dropped /24
        net = ipaddress.ip_network(f"{lab.host(i * 256)}/24")
        addrs = np.arange(int(net.network_address), int(net.broadcast_address) + 1,
                          dtype=np.uint32)
        if not truth.dropped_mask(addrs).any():
            return str(net)
    raise RuntimeError("no /24 without a dropping host")


def _nmap_row(prefix: str, runs: int) -> dict[str, Any]:
    nmap = shutil.which("nmap")
    if nmap is None:
        raise SystemExit("nmap is not installed: apt-get install nmap (make bench does it)")
    ours = ["prtip-nb", "scan", "-sS", "-Pn", "-n", "--top-ports", str(N_PORTS), "-T4",
            "--no-progress", "--open", prefix]
    theirs = [nmap, "-sS", "-Pn", "-n", "--top-ports", str(N_PORTS), "-T4", "--open", prefix]
    walls: dict[str, list[float]] = {"prtip_nb": [], "nmap": []}
    own: dict[str, list[float]] = {"prtip_nb": [], "nmap": []}
    for _ in range(runs):
        for cmd, tool, pat in ((ours, "prtip_nb", _DONE), (theirs, "nmap", _NMAP_S)):
            text: list[str] = []
            r = timed(cmd, tool, timeout=1800, capture=text)
            m = pat.search(text[0])
            walls[tool].append(r.wall_s)
            own[tool].append(float(m[1]) if m else float("nan"))
            print(f"  /24 {tool:9s} {r.wall_s:7.2f} s (scan {own[tool][-1]:.2f} s)", flush=True)
    med = {k: sorted(v)[len(v) // 2] for k, v in walls.items()}
    med_own = {k: sorted(v)[len(v) // 2] for k, v in own.items()}
    return {"prefix": prefix, "prtip_nb_s": med["prtip_nb"], "nmap_s": med["nmap"],
            "ratio": med["prtip_nb"] / med["nmap"], "prtip_nb_scan_s": med_own["prtip_nb"],
            "nmap_scan_s": med_own["nmap"], "scan_ratio": med_own["prtip_nb"] / med_own["nmap"],
            "nmap_pps": 256 * N_PORTS / med_own["nmap"]}


# -- analysis, each step in its own process (python -m benchmarks.scale STEP ...) ----------

def _step(*args: str) -> dict[str, Any]:
    text: list[str] = []
    cmd = [sys.executable, "-m", "benchmarks.scale", *args]
    r = timed(cmd, "prtip_nb", timeout=1800, capture=text)
    out: dict[str, Any] = json.loads(text[0].strip().splitlines()[-1])
    out["wall_s"] = r.wall_s
    out["peak_rss_mib"] = r.peak_rss_bytes / 2**20
    print(f"  {args[0]:6s} {out['step_s']:7.2f} s (process {r.wall_s:.2f} s) "
          f"{out['peak_rss_mib']:7.1f} MiB  {out.get('rows', '')}", flush=True)
    return out


def _run_step(argv: list[str]) -> dict[str, Any]:
    import prtip_nb as pn

    step, root = argv[0], argv[1]
    t0 = time.perf_counter()
    if step == "read":
        res = pn.read_scans(root, scan_id=argv[2], state="open")
        rows = res.tables["ports"].num_rows
    elif step == "sql":
        df = pn.sql("select port, state, count(*) as n, count(distinct host) as hosts "
                    "from ports group by port, state order by port, state", root)
        rows = len(df)
    elif step == "diff":
        a = pn.read_scans(root, scan_id=argv[2], state="open")
        b = pn.read_scans(root, scan_id=argv[3], state="open")
        d = pn.diff(a, b)
        rows = len(d)
        counts = d["change"].astype(str).value_counts().to_dict()
        return {"step_s": time.perf_counter() - t0, "rows": rows, "changes": counts}
    else:
        raise SystemExit(f"unknown step {step!r}")
    return {"step_s": time.perf_counter() - t0, "rows": rows}


def scale_15(runs: int = 1) -> dict[str, Any]:
    """See the module docstring. ``runs``: nmap/prtip-nb pairs on the /24 (at least 1)."""
    from prtip_nb.lab import RangeLab

    ports = _top_ports()
    probes = (1 << 17) * N_PORTS
    summary: dict[str, Any] = {"probes": probes}
    work = Path(tempfile.mkdtemp(prefix="prtip-scale-"))
    try:
        exe = build_ceiling(work)
        lab_a = dict(tcp=OPEN, drop_count=DROP_COUNT, seed=SEED)
        with RangeLab(RANGE, **lab_a) as lab:  # type: ignore[arg-type]
            summary["ceiling"] = ceil = ceiling(exe, RANGE, ports)
            print(f"  ceiling: {ceil['pps']:,.0f} probes/s ({ceil['sent']:,} sent)", flush=True)
            a = summary["scan"] = _scan(RANGE, work / "scans")
            a["pps"] = probes / a["scan_s"]
            a["fraction_of_ceiling"] = a["pps"] / ceil["pps"]
            print(f"  scan: {a['scan_s']:.1f} s, {a['pps']:,.0f} probes/s "
                  f"({a['fraction_of_ceiling']:.0%} of the ceiling), peak RSS "
                  f"{a['peak_rss_mib']:.0f} MiB", flush=True)
            summary["check"] = check = _check(lab, work / "scans", a["scan_id"], ports)
            print(f"  check: {check}", flush=True)
            summary["ceiling_after"] = ceiling(exe, RANGE, ports)
            small = summary["scan_20"] = _scan(SMALL, work / "small")
            print(f"  /20: {small['peak_rss_mib']:.0f} MiB; the /15's marginal memory "
                  f"{a['marginal_bytes_per_probe']:.2f} B/probe (telemetry RSS slope); "
                  f"ticks {a['ticks']} median {a['tick_median_s']:.3f} s max "
                  f"{a['tick_max_s']:.3f} s", flush=True)
            summary["nmap_24"] = row = _nmap_row(_clean_24(lab), max(1, runs))
            row["pps_ratio"] = row["nmap_pps"] / a["pps"]
            print(f"  nmap /24: {row}", flush=True)
        root = str(work / "scans")
        summary["read_open"] = _step("read", root, a["scan_id"])
        summary["sql_groupby"] = _step("sql", root)
        lab_b = dict(tcp=(*OPEN, 8080), drop_count=DROP_COUNT, seed=SEED + 1)
        with RangeLab(RANGE, **lab_b):  # type: ignore[arg-type]
            b = summary["scan_b"] = _scan(RANGE, work / "scans")
        summary["diff"] = _step("diff", root, a["scan_id"], b["scan_id"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["exact"] = (summary["check"]["wrong"] == 0 and summary["check"]["duplicates"] == 0
                        and summary["check"]["missing_open"] == 0)
    print(f"  saved {save('scale-15', {'scenario': 'scale-15', 'summary': summary})}")
    return {"summary": summary}


def _top_ports() -> list[int]:
    from prtip_nb.targets import top_ports

    return sorted(p for lo, hi in top_ports(N_PORTS).tcp for p in range(lo, hi + 1))


__all__ = ["build_ceiling", "ceiling", "scale_15"]

if __name__ == "__main__":
    print(json.dumps(_run_step(sys.argv[1:])), flush=True)
