"""The connect scan's floor (issue 13's -sT row): what the kernel itself costs.

``connect-ceiling`` builds a RangeLab /24 (80 and 443 open on every host, every other port
resets) and runs, alternately in the same run:

1. **The floor**: a small C program (written and compiled with gcc here, into a temp dir)
   that does what an ideal connect scanner does and nothing else -- no Python, no
   results: non-blocking connect() to every (host, port) of the /24 x the top 100 ports
   (25,600), at most WINDOW in flight, epoll for the ones not answered inside connect(),
   close with SO_LINGER 0 (an RST, no TIME_WAIT) for the open ones. Three variants: a
   new socket per probe (``fresh``), a refused socket connected again (``reuse``: Linux
   lets a socket refused by a reset connect again after one ECONNABORTED), and that plus
   a second connect() right after EINPROGRESS, which on a LAN returns the answer already
   in (``ask-again``; both are what net/connect.py does). It connects only inside
   198.18.0.0/15 (the program refuses any other prefix), at most ``FLOOR_PROBES`` probes
   and ``FLOOR_S`` seconds.
2. **prtip-nb** ``scan -sT -Pn -n --top-ports 100 -T4`` and **nmap** with the same flags,
   whole process; each tool's own scan time too ("Done: ... in X s", "scanned in X
   seconds"), which leaves out interpreter start-up.

All three are checked against the lab's truth (the floor by its counts: 512 open,
25,088 refused, nothing else).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .harness import compile_c, nmap_path, save, timed
from .network import OPEN, _truth, measured_run

FLOOR_PROBES = 1_000_000  # bounds: whichever comes first
FLOOR_S = 20.0
PREFIX = "198.18.0.0/24"
N_PORTS = 100

_FLOOR_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 65536
#define PROBE_TIMEOUT 1.0 /* seconds: no answer by then is a timeout (none expected) */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double sent_at[MAXFD];
static char registered[MAXFD]; /* in the epoll set (a closed fd leaves it by itself) */
static uint64_t n_open, n_refused, n_other, n_timeout, n_inline, n_sockets;
static const struct linger rst = {1, 0};

/* A verdict for fd's probe: close it (RST if it connected) or keep it to connect again. */
static int done(int fd, int err, int reuse) {
    if (err == 0) {
        n_open++;
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
    } else if (err == ECONNREFUSED) {
        n_refused++;
        if (reuse) return fd;
    } else {
        n_other++;
    }
    registered[fd] = 0;
    close(fd);
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: connfloor NET NHOSTS PORTS_CSV WINDOW MODE MAX_PROBES MAX_S\n");
        return 2;
    }
    uint32_t net = ntohl(inet_addr(argv[1]));
    uint64_t nhosts = strtoull(argv[2], 0, 10);
    /* SAFETY: 198.18.0.0/15 (RFC 2544) only, whatever the caller passes. */
    if ((net & 0xfffe0000u) != 0xc6120000u || nhosts == 0 || nhosts > 131072
        || ((net - 0xc6120000u) + nhosts) > 131072) {
        fprintf(stderr, "connfloor: targets must lie inside 198.18.0.0/15\n");
        return 2;
    }
    static uint16_t ports[65536];
    int nports = 0;
    for (char *t = strtok(argv[3], ","); t && nports < 65536; t = strtok(0, ","))
        ports[nports++] = (uint16_t)atoi(t);
    int window = atoi(argv[4]), reuse = atoi(argv[5]); /* the mode: 0, 1 or 2 */
    uint64_t total = nhosts * (uint64_t)nports, max_probes = strtoull(argv[6], 0, 10);
    double max_s = atof(argv[7]);
    if (window < 1 || window > 30000) {
        fprintf(stderr, "connfloor: 1 <= window <= 30000\n");
        return 2;
    }
    if (max_s <= 0 || max_s > 120) { fprintf(stderr, "connfloor: 0 < seconds <= 120\n"); return 2; }
    if (total > max_probes) total = max_probes;
    struct rlimit rl = {MAXFD - 1, MAXFD - 1};
    setrlimit(RLIMIT_NOFILE, &rl);

    int ep = epoll_create1(0);
    static int spare[MAXFD];
    int nspare = 0, inflight = 0;
    static struct epoll_event evs[1024];
    uint64_t next = 0;
    double t0 = now(), deadline = t0 + max_s, last_sweep = t0;
    while ((next < total || inflight > 0) && now() < deadline) {
        /* Fill the window. */
        while (inflight < window && next < total) {
            uint64_t k = next++;
            struct sockaddr_in sa = {0};
            sa.sin_family = AF_INET;
            sa.sin_addr.s_addr = htonl(net + (uint32_t)(k % nhosts));
            sa.sin_port = htons(ports[k / nhosts]);
            int fd = nspare ? spare[--nspare] : -1;
            if (fd < 0) {
                fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
                if (fd < 0 || fd >= MAXFD) { perror("socket"); return 1; }
                n_sockets++;
            }
            int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
            if (r < 0 && errno == ECONNABORTED) /* a refused socket, used again */
                r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
            if (r < 0 && errno == EINPROGRESS && reuse > 1) {
                /* ASK AGAIN: on a LAN the answer was processed before connect() returned
                   (release_sock runs the socket's backlog); a second connect() returns it
                   (0 or the error), or EALREADY while the probe is really in flight. */
                r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
                if (r < 0 && errno == EALREADY) errno = EINPROGRESS;
            }
            if (r < 0 && errno == EINPROGRESS) {
                struct epoll_event ev = {EPOLLOUT | EPOLLONESHOT, {.fd = fd}};
                epoll_ctl(ep, registered[fd] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
                registered[fd] = 1;
                sent_at[fd] = now();
                inflight++;
                continue;
            }
            n_inline++;
            int kept = done(fd, r == 0 ? 0 : errno, reuse);
            if (kept >= 0) spare[nspare++] = kept;
        }
        int n = epoll_wait(ep, evs, 1024, next < total && inflight < window ? 0 : 10);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd, err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            inflight--;
            sent_at[fd] = 0;
            int kept = done(fd, err, reuse);
            if (kept >= 0) spare[nspare++] = kept;
        }
        double t = now();
        if (t - last_sweep > 0.05) { /* timeouts: a sweep every 50 ms is plenty */
            last_sweep = t;
            for (int fd = 0; fd < MAXFD; fd++)
                if (sent_at[fd] > 0 && t - sent_at[fd] > PROBE_TIMEOUT) {
                    sent_at[fd] = 0; inflight--; n_timeout++;
                    registered[fd] = 0; close(fd);
                }
        }
    }
    double dt = now() - t0;
    printf("{\"probes\": %llu, \"scan_s\": %.6f, \"open\": %llu, \"refused\": %llu, "
           "\"other\": %llu, \"timeout\": %llu, \"inline\": %llu, \"sockets\": %llu}\n",
           (unsigned long long)next, dt, (unsigned long long)n_open,
           (unsigned long long)n_refused, (unsigned long long)n_other,
           (unsigned long long)n_timeout, (unsigned long long)n_inline,
           (unsigned long long)n_sockets);
    return 0;
}
"""


def build_floor(directory: Path) -> Path:
    """Write and compile the floor program; its path."""
    return compile_c(directory, "connfloor", _FLOOR_C, "the connect floor")


def floor(exe: Path, prefix: str, ports: list[int], window: int, mode: int) -> dict[str, Any]:
    """One run of the floor program against ``prefix`` x ``ports``: its JSON line."""
    import ipaddress

    net = ipaddress.ip_network(prefix)
    out = subprocess.run(
        [str(exe), str(net.network_address), str(net.num_addresses),
         ",".join(map(str, ports)), str(window), str(mode),
         str(FLOOR_PROBES), str(FLOOR_S)],
        capture_output=True, text=True, timeout=FLOOR_S + 30, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _top_ports() -> list[int]:
    from prtip_nb.targets import top_ports

    return sorted(p for lo, hi in top_ports(N_PORTS).tcp for p in range(lo, hi + 1))


#: The floor's variants: (name, window, mode). Mode 0: a new socket a probe; 1: a refused
#: socket connected again; 2: that, and connect() asked again at once (net/connect.py
#: _ask_again). 64 in flight is what the engine keeps on a LAN (FILL_BURST).
VARIANTS = (("fresh-64", 64, 0), ("reuse-64", 64, 1), ("ask-again-64", 64, 2))


def connect_ceiling(runs: int = 5) -> dict[str, Any]:
    """The C floor, prtip-nb -sT and nmap -sT on a RangeLab /24 x 100 ports, same run."""
    from prtip_nb.lab import RangeLab

    nmap = nmap_path()
    ports = _top_ports()
    top = ["--top-ports", str(N_PORTS)]
    ours = ["prtip-nb", "scan", "-Pn", "-n", "--no-progress", "--open", "-sT", *top, "-T4",
            PREFIX]
    theirs = [nmap, "-Pn", "-n", "--open", "-sT", *top, "-T4", PREFIX]
    n_open = 256 * len(OPEN)
    walls: dict[str, list[float]] = {"prtip_nb": [], "nmap": []}
    scan: dict[str, list[float]] = {"prtip_nb": [], "nmap": []}
    rss: dict[str, list[int]] = {"prtip_nb": [], "nmap": []}
    floors: dict[str, list[float]] = {name: [] for name, _w, _m in VARIANTS}
    exact = {"prtip_nb": True, "nmap": True, "floor": True}
    work = Path(tempfile.mkdtemp(prefix="connfloor-"))
    try:
        exe = build_floor(work)
        with RangeLab(PREFIX, tcp=OPEN) as lab:
            truth = _truth(lab, [lab.host(i) for i in range(256)], OPEN)
            timed(ours, "prtip_nb", timeout=300)  # warm-up: page cache, .pyc files
            timed(theirs, "nmap", timeout=300)
            for _ in range(runs):
                for name, window, mode in VARIANTS:
                    f = floor(exe, PREFIX, ports, window, mode)
                    exact["floor"] &= (f["open"] == n_open and f["probes"] == 25_600
                                       and f["refused"] == 25_600 - n_open)
                    floors[name].append(f["scan_s"])
                    print(f"  floor {name:10s} {f['scan_s']:.3f} s  {f}", flush=True)
                for cmd, tool in ((ours, "prtip_nb"), (theirs, "nmap")):
                    wall, own, peak, ok = measured_run(cmd, tool, truth, "-sT /24", timeout=300)
                    exact[tool] &= ok
                    walls[tool].append(wall)
                    scan[tool].append(own)
                    rss[tool].append(peak)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    med_scan = {k: statistics.median(v) for k, v in scan.items()}
    med_floor = {k: statistics.median(v) for k, v in floors.items()}
    best = min(med_floor.values())
    summary: dict[str, Any] = {
        "runs": runs,
        "floor_s": med_floor, "floor_best_s": best,
        "prtip_nb_median_s": med["prtip_nb"], "nmap_median_s": med["nmap"],
        "ratio": med["prtip_nb"] / med["nmap"],
        "prtip_nb_scan_s": med_scan["prtip_nb"], "nmap_scan_s": med_scan["nmap"],
        "scan_ratio": med_scan["prtip_nb"] / med_scan["nmap"],
        "floor_vs_nmap_wall": best / med["nmap"],
        "floor_vs_nmap_scan": best / med_scan["nmap"],
        "ours_scan_vs_floor": med_scan["prtip_nb"] / best,
        "prtip_nb_peak_rss_mib": max(rss["prtip_nb"]) / 2**20,
        "nmap_peak_rss_mib": max(rss["nmap"]) / 2**20,
        "exact": exact["prtip_nb"], "nmap_exact": exact["nmap"], "floor_exact": exact["floor"],
    }
    print(f"  floor {best:.3f} s ({', '.join(f'{k} {v:.3f}' for k, v in med_floor.items())}); "
          f"nmap {med['nmap']:.3f} s (scan {med_scan['nmap']:.3f}); prtip-nb "
          f"{med['prtip_nb']:.3f} s (scan {med_scan['prtip_nb']:.3f}); floor/nmap "
          f"{summary['floor_vs_nmap_wall']:.2f} whole, {summary['floor_vs_nmap_scan']:.2f} "
          f"scan; ours/floor {summary['ours_scan_vs_floor']:.2f}", flush=True)
    print(f"  saved {save('connect-ceiling', {'scenario': 'connect-ceiling', 'summary': summary})}")
    return {"summary": summary}


__all__ = ["build_floor", "connect_ceiling", "floor"]
