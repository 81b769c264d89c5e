"""``prtip-nb``: the command line, with nmap's flags where nmap has them.

Exit codes: 0 success, 1 the scan failed (what was saved is said), 2 bad usage, a bad
target/port spec or an output path that cannot be written (nothing was sent), 130 stopped
by Ctrl-C (partial results are shown and, with -o, resumable). The scan path imports
pyarrow but never pandas, to start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from . import _cliguard as guard
from ._termsafe import printable
from .errors import PrtipError, SpecError
from .interop import commands as interop_commands
from .osdetect import text as os_text

if TYPE_CHECKING:
    import pandas as pd

    from .engine.scan import Scan
    from .results import ScanResult

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
STOP_TIMEOUT = 30.0  # seconds a cancelled scan gets to stop and save after Ctrl-C
FOLD_OVER = 25  # nmap lists a state's ports one by one up to about this many


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prtip-nb", description="A port scanner built for Jupyter.")
    p.add_argument("--version", action="version", version=f"prtip-nb {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("scan", help="scan targets (nmap-style flags)")
    s.add_argument("targets", nargs="*", help="IPs, CIDRs, ranges (198.51.100.1-20), hostnames")
    m = s.add_mutually_exclusive_group()
    m.add_argument("-sT", dest="method", action="store_const", const="connect",
                   help="TCP connect scan (the default; needs no privileges)")
    m.add_argument("-sS", dest="method", action="store_const", const="syn",
                   help="TCP SYN scan (needs root or CAP_NET_RAW)")
    s.add_argument("-sU", dest="udp", action="store_true",
                   help="UDP scan (needs root or CAP_NET_RAW); with -sS, TCP and UDP together")
    s.add_argument("--method", dest="method", choices=["connect", "syn", "udp", "auto"])
    s.add_argument("-p", dest="ports", metavar="PORTS",
                   help="ports: 22,80,8000-8100, '-' for 1-65535, T:/U: prefixes")
    s.add_argument("--top-ports", type=int, metavar="N", help="the N most common ports")
    s.add_argument("-6", dest="family", action="store_const", const=6, help="resolve to IPv6")
    s.add_argument("-iL", dest="input_file", metavar="FILE", help="read targets from FILE")
    s.add_argument("--exclude", action="append", default=[], metavar="TARGETS")
    s.add_argument("--excludefile", dest="exclude_file", metavar="FILE")
    s.add_argument("-T", dest="timing", type=int, choices=range(6), default=3,
                   metavar="0-5", help="timing template (T3 normal, T4 aggressive)")
    s.add_argument("--max-retries", type=int, metavar="N")
    s.add_argument("--host-timeout", type=float, metavar="SECONDS")
    s.add_argument("--rate", type=_rate_arg, metavar="PPS|auto",
                   help="pin the send rate, probes per second; 'auto' (the default) adapts it "
                        "to what the path carries (no limit on loopback)")
    s.add_argument("--min-rate", type=float, metavar="PPS",
                   help="never send slower than this while the rate adapts")
    s.add_argument("--max-rate", type=float, metavar="PPS",
                   help="never send faster than this while the rate adapts")
    s.add_argument("--stats-every", type=float, metavar="SECONDS",
                   help="print a status line (progress, rate in force and why) this often")
    s.add_argument("--concurrency", type=int, metavar="N", help="connects in flight at once")
    s.add_argument("--seed", type=int, help="seed of the target order (reproducible runs)")
    s.add_argument("--shard", metavar="K/N", help="scan only shard K of N")
    s.add_argument("--dask", metavar="ADDRESS",
                   help="run the scan as shards on a Dask cluster (tcp://scheduler:8786)")
    s.add_argument("--shards", type=int, metavar="N", help="with --dask: how many shards")
    s.add_argument("--open", action="store_true", help="show only open ports")
    s.add_argument("--privileged", action="store_true",
                   help="keep root: by default, as root, the scan becomes the sudo caller "
                        "(or nobody) once its raw sockets are open")
    s.add_argument("-o", "--output", metavar="DIR", help="write a Parquet dataset under DIR")
    s.add_argument("--hold", choices=("auto", "all", "open"), default="auto",
                   help="rows kept in memory with -o: 'open' ports only (the dataset has them "
                   "all), 'all', or 'auto' (open only above a million probes)")
    s.add_argument("-oN", dest="normal_output", metavar="FILE", help="write the text table")
    interop_commands.add_scan_outputs(s)  # -oX, -oJ, -oG
    os_text.add_arguments(s)  # -O, --osscan-limit, --osscan-guess, --os-db
    _add_dns_flags(s)  # -n, -R, --dns-servers, -sL
    s.add_argument("-Pn", action="store_true",
                   help="skip host discovery (always skipped for loopback, unprivileged, "
                        "sharded and Dask scans)")
    s.add_argument("-sn", dest="ping_only", action="store_true",
                   help="ping sweep: host discovery only, no port scan (needs root)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on a TTY")
    s.add_argument("--event-log", metavar="FILE", help="write every scan event as JSON Lines")
    s.add_argument("-sV", dest="service", action="store_true",
                   help="service and version detection on the open TCP ports (TLS included)")
    s.add_argument("--version-intensity", type=int, choices=range(10), default=7, metavar="0-9",
                   help="-sV: send probes up to this rarity (default 7; hinted ones always)")
    s.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="check that open TCP ports speak (ports.verified) and flag hosts that "
                        "accept every port (hosts.pseudo_services); default: on with -sV")
    from .nse.text import add_arguments as add_script_arguments

    add_script_arguments(s)  # --script, -sC, --script-args, --script-timeout, -A

    d = sub.add_parser("demo", help="start the built-in lab, scan it, write Parquet + HTML")
    d.add_argument("-o", "--output", default="data/scans", metavar="DIR")
    d.add_argument("--report", default="data/report.html", metavar="FILE")

    u = sub.add_parser("resume", help="continue a stopped or killed scan from its checkpoint")
    u.add_argument("root", metavar="DIR", help="the dataset the scan wrote to (-o DIR)")
    u.add_argument("scan_id", metavar="SCAN_ID")
    u.add_argument("--dask", metavar="ADDRESS", help="resume a Dask scan's shards there")
    u.add_argument("--open", action="store_true", help="show only open ports")

    r = sub.add_parser("read", help="summarise the scans stored in a Parquet dataset")
    r.add_argument("root", metavar="DIR")

    h = sub.add_parser("report", help="write a self-contained HTML report of a stored scan")
    h.add_argument("root", metavar="DIR", help="the Parquet dataset (as written by -o DIR)")
    h.add_argument("--scan-id", metavar="ID", help="which scan (default: the latest started)")
    h.add_argument("-o", "--output", default="report.html", metavar="FILE")
    interop_commands.add_commands(sub)  # import, diff
    return p


# -- reverse DNS flags (engine/names.py, net/rdns.py) ----------------------------------------
def _add_dns_flags(s: argparse.ArgumentParser) -> None:
    g = s.add_mutually_exclusive_group()
    g.add_argument("-n", action="store_true",
                   help="no reverse DNS (by default the hosts that are up are named)")
    g.add_argument("-R", action="store_true", help="reverse DNS for every target, up or not")
    s.add_argument("--dns-servers", metavar="SERV1[,SERV2,...]",
                   help="DNS servers for reverse DNS (default: /etc/resolv.conf's)")
    s.add_argument("-sL", dest="list_only", action="store_true",
                   help="list scan: list the targets with their names, send nothing else")
    s.add_argument("--traceroute", action="store_true",
                   help="trace the path to each host up (needs root or CAP_NET_RAW)")


def _dns_options(args: argparse.Namespace) -> dict[str, Any]:
    servers = tuple(args.dns_servers.split(",")) if args.dns_servers else ()
    return {"resolve": "never" if args.n else "all" if args.R else "up",
            "dns_servers": servers,
            "traceroute": args.traceroute or bool(getattr(args, "aggressive", False))}  # -A


def _cmd_list(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """``-sL``: the targets and their names (engine.names.list_scan)."""
    from .engine.names import list_scan

    # The result (pyarrow) only for an output file that takes it: else the text alone.
    files = args.output or any(getattr(args, a, None) for _, a, _m in interop_commands.OUTPUTS)
    res, text = list_scan(args.targets, options, result=bool(files))
    text = printable(text)  # names come from DNS: no escape sequence gets through
    sys.stdout.write(text)
    guard.write_normal(args.normal_output, text)
    if res is not None:
        interop_commands.write_scan_outputs(res, args)  # -oX, -oJ, -oG
    if args.output and res is not None:
        print(f"Parquet dataset: {os.path.join(args.output, f'scan_id={res.scan_id}')}")
    return EXIT_OK


def _rate_arg(text: str) -> float | None:
    """--rate: a positive, finite number of probes per second, or 'auto' (adaptive)."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate: give probes per second (e.g. 5000) or 'auto'") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate: it must be a positive, finite number of probes per "
            "second, or 'auto'")
    return value


def main(argv: Sequence[str] | None = None, *, drop_root: bool | None = None) -> int:
    """Run the command line. ``drop_root``: whether ``scan``, run as root, gives root up
    once its raw sockets are open; by default only when run as the program (``argv`` None):
    ``main([...])`` called from Python never changes its caller's process for good."""
    _lean_allocator()
    guard.lean_start()
    args = build_parser().parse_args(argv)
    args.drop_root = argv is None if drop_root is None else drop_root
    with warnings.catch_warnings():
        # One line per warning, as the other messages: not Python's file:line and source.
        warnings.showwarning = guard.show_warning
        code = _dispatch(args)
    if argv is None:  # the program: its outputs are written and closed; skip the teardown
        guard.exit_now(code)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "scan":
            return _cmd_scan(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.output, args.report)
        if args.command == "read":
            return _cmd_read(args)
        if args.command == "resume":
            return _cmd_resume(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "import":
            return interop_commands.cmd_import(args)
        if args.command == "diff":
            return interop_commands.cmd_diff(args)
    except SpecError as exc:
        print(f"prtip-nb: {printable(str(exc))}{guard.denied_hint(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except PrtipError as exc:
        print(f"prtip-nb: {printable(str(exc))}{guard.denied_hint(exc)}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print("prtip-nb: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # not translated deeper down: still one line, never a traceback
        print(f"prtip-nb: {printable(guard.os_error(exc))}{guard.denied_hint(exc)}",
              file=sys.stderr)
        return EXIT_FAIL
    return EXIT_USAGE


def _udp_options(args: argparse.Namespace) -> None:
    """-sU alone is method 'udp' (unprefixed ports are UDP); -sS -sU is method 'syn' over
    T: and U: ports, unprefixed ones counting for both protocols (nmap's rule)."""
    if not args.udp:
        return
    if args.method in (None, "udp"):
        args.method = "udp"
        return
    if args.method != "syn":
        from .errors import ConfigError

        raise ConfigError(f"-sU combines with -sS only, not with method {args.method!r}")
    from .targets import PortSet, parse_ports

    spec, top = args.ports, args.top_ports
    both = PortSet(tcp=parse_ports(spec, top_ports=top, default_proto="tcp").tcp,
                   udp=parse_ports(spec, top_ports=top, default_proto="udp").udp)
    args.ports, args.top_ports = both.to_spec(), None


def _lean_allocator() -> None:
    """Make this process's peak RSS its live data, not its allocators' hoards.

    Measured on a 65,535-port scan (issue 3's memory figure), the defaults cost ~60 B per
    port on top of the results themselves:
    - Arrow's mimalloc keeps freed pages for reuse and commits its arena up front, so each
      short-lived compute buffer stays resident (~2 MiB per kernel call on 65K rows);
    - numpy (glibc malloc) and Arrow then hold separate free memory neither can reuse;
    - glibc raises its mmap threshold after the first large free, so later 64 KB-1 MB
      arrays land on the heap, whose freed middle is never returned.
    One allocator (glibc, via Arrow's "system" pool) with a fixed 64 KiB mmap threshold
    returns every big buffer at free. Only before pyarrow loads; the environment wins.
    """
    if "pyarrow" in sys.modules or "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).mallopt(-3, 65536)  # M_MMAP_THRESHOLD (glibc); fixes it, too
        except (AttributeError, OSError):  # not glibc (musl): keep its defaults
            pass


def _cmd_scan(args: argparse.Namespace) -> int:
    guard.prewarm_capture(args)  # first: the kernel's ring set-up overlaps the imports
    from .engine.events import ScanCompleted

    _udp_options(args)
    guard.drop_root(args)  # as root: open the raw sockets, then become the sudo caller

    options: dict[str, Any] = {
        "method": args.method or "connect",
        "top_ports": args.top_ports,
        "exclude": tuple(args.exclude),
        "exclude_file": args.exclude_file,
        "input_file": args.input_file,
        "family": args.family,
        "timing": args.timing,
        "max_retries": args.max_retries,
        "host_timeout": args.host_timeout,
        "rate": args.rate,
        "min_rate": args.min_rate,
        "max_rate": args.max_rate,
        "concurrency": args.concurrency,
        "seed": args.seed,
        "output": args.output,
        "hold": args.hold,
        "service": args.service,
        "version_intensity": args.version_intensity,
        "verify": args.verify,
        **os_text.options(args),
        **_dns_options(args),
    }
    if args.script or args.default_scripts or args.aggressive:
        from .nse.text import options as script_options

        options.update(script_options(args))
    if args.shard:
        from .targets import parse_shard  # numpy (targets.space): not on the -sL/-sn path

        options["shard"] = parse_shard(args.shard)
    guard.preflight(args, options)
    if args.list_only:
        return _cmd_list(args, options)
    if options["os"]:  # -O: before discovery sends its pings
        from .engine.osstage import preflight

        preflight(family=args.family, os_db=args.os_db)
    if args.ping_only or not (args.Pn or args.shard or args.dask or args.shards):
        from .engine import discovery

        if args.ping_only:  # -sn: discovery is the whole scan
            res, text = discovery.cmd_ping_sweep(args.targets, options)
            text = printable(text)  # hostnames come from DNS: no escape sequence gets through
            sys.stdout.write(text + _memory_line(res) + "\n")
            guard.write_normal(args.normal_output, text)
            interop_commands.write_scan_outputs(res, args)  # -oX, -oJ, -oG
            if args.output:
                print(f"Parquet dataset: {os.path.join(args.output, f'scan_id={res.scan_id}')}")
            return EXIT_OK
        found = discovery.discover_first(args.targets, options)  # None: not applicable
        if found is not None:
            up = discovery.up_hosts(found)
            if not up:
                print("Note: no host seems up. If they are, but block ping probes, try -Pn.")
                return EXIT_OK
            args.targets = up  # exclusions and -iL are already applied
            options.update(exclude=(), exclude_file=None, input_file=None)
            if options["resolve"] == "up":
                options["resolve"] = "all"  # every target left is up: nmap names them all
    from .engine.scan import Scan  # not before: -sL and -sn do without it (and pyarrow's load)

    sc: Any
    if args.dask or args.shards:
        from .engine.distributed import DistributedScan

        sc = DistributedScan(args.targets, args.ports, cluster=args.dask, shards=args.shards,
                             **options)
    else:
        sc = Scan(args.targets, args.ports, **options)
    log = open(args.event_log, "w") if args.event_log else None  # noqa: SIM115
    if log is not None:
        sc.subscribe(lambda ev: log.write(_event_json(ev) + "\n"))
    ended = sc.events(ScanCompleted)  # iterators get every terminal event: the wait below
    sc.start()
    show = sys.stderr.isatty() and not args.no_progress
    every = args.stats_every
    next_stats = time.monotonic() + every if every else float("inf")
    interrupted = False
    try:
        try:
            while True:
                if show:
                    _draw_progress(sc, sys.stderr)
                if time.monotonic() >= next_stats:
                    _print_stats(sc, sys.stderr, clear=show)
                    next_stats += every
                # Woken by the terminal event, not a 20 ms poll (10 ms on average); not by a
                # Thread.join with a timeout either: a Ctrl-C inside the join can leave the
                # thread marked as ended while it still runs (seen: wait() then found no
                # result), a CPython limitation of interrupting Thread.join.
                ev = ended.get(timeout=min(0.1 if show else 0.5,
                                           max(0.0, next_stats - time.monotonic())))
                if (ev is not None and ev.terminal) or not sc.running:
                    break
            res = sc.wait()
        except KeyboardInterrupt:
            interrupted = True
            sc.cancel()
            try:
                res = sc.wait(timeout=STOP_TIMEOUT)
            except TimeoutError:  # never hang on Ctrl-C: say so, exit as interrupted
                print(f"\nprtip-nb: the scan did not stop within {STOP_TIMEOUT:.0f} s; "
                      f"{guard.saved(args.output, sc.scan_id)}", file=sys.stderr)
                return EXIT_INTERRUPTED
            print("\nprtip-nb: interrupted; partial results follow", file=sys.stderr)
    except PrtipError as exc:  # the scan failed (a full disk, a dead worker): say what is kept
        if show:
            sys.stderr.write("\r\033[K")
        print(f"prtip-nb: {printable(str(exc))}{guard.hint(exc)}", file=sys.stderr)
        print(f"prtip-nb: {guard.saved(args.output, sc.scan_id)}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        if log is not None:
            sc.bus.close(timeout=2.0)  # deliver what is queued, then close the file
            log.close()
    if show:
        sys.stderr.write("\r\033[K")
    # The report goes out a chunk (REPORT_HOSTS hosts) at a time: a /15's text is never one
    # string. -oN is written whole or not at all, so its chunks are kept only when asked for.
    normal: list[str] | None = [] if args.normal_output else None
    for chunk in report_chunks(res, only_open=args.open, elapsed=sc.progress.elapsed):
        sys.stdout.write(chunk)
        if normal is not None:
            normal.append(chunk)
    if normal is not None:
        guard.write_normal(args.normal_output, "".join(normal))
    interop_commands.write_scan_outputs(res, args)
    if args.output:
        print(f"Parquet dataset: {os.path.join(args.output, 'scan_id=' + str(res.scan_id))}")
    if res.note:
        print(printable(f"Note: {res.note}"))
    if interrupted or sc.status == "cancelled":
        # 128 + SIGINT, as shells report a job stopped by Ctrl-C: scripts must not take
        # a cut-off scan for a finished one.
        print(f"prtip-nb: {guard.saved(args.output, sc.scan_id)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if sc.status == "completed" else EXIT_FAIL


def _cmd_resume(args: argparse.Namespace) -> int:
    from .engine.resume import resume

    t0 = time.monotonic()
    res = resume(args.root, args.scan_id, cluster=args.dask)
    sys.stdout.write(format_report(res, only_open=args.open, elapsed=time.monotonic() - t0))
    print(f"Parquet dataset: {os.path.join(args.root, 'scan_id=' + args.scan_id)}")
    return EXIT_OK


def _event_json(ev: Any) -> str:
    import json

    return json.dumps({"t": round(ev.t, 6), "scan_id": ev.scan_id, "kind": ev.kind,
                       **ev.payload()})


def _limit_text(pr: Any) -> str:
    """The send rate in force and why, e.g. 'limit 120,000/s growing'."""
    if not pr.rate_reason:
        return ""
    if pr.rate_limit is None:
        return f" limit none ({pr.rate_reason})"
    return f" limit {pr.rate_limit:,.0f}/s {pr.rate_reason}"


def _draw_progress(sc: Scan, out: TextIO) -> None:
    pr = sc.progress
    width = 30
    filled = int(width * pr.fraction)
    eta = f"{pr.eta:5.1f}s" if pr.eta is not None else "  ?  "
    out.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {pr.fraction:6.1%} "
        f"{pr.done}/{pr.total} {pr.rate:8.0f}/s ETA {eta} open {pr.open}{_limit_text(pr)}\033[K"
    )
    out.flush()


def _print_stats(sc: Scan, out: TextIO, *, clear: bool) -> None:
    """nmap's --stats-every line: elapsed, done, the rate achieved and the rate in force."""
    pr = sc.progress
    eta = f"; ETA {pr.eta:.1f}s" if pr.eta is not None else ""
    out.write(("\r\033[K" if clear else "")
              + f"Stats: {pr.elapsed:.1f}s elapsed; {pr.done:,}/{pr.total:,} probes done "
              f"({pr.fraction:.1%}); {pr.sent:,} sent; {pr.rate:,.0f}/s{eta};"
              f"{_limit_text(pr)}; {pr.open:,} open\n")
    out.flush()


def format_report(res: ScanResult, *, only_open: bool = False, elapsed: float | None = None) -> str:
    """nmap-like text: one block per host, open (or all rare-state) ports, then totals."""
    return "".join(report_chunks(res, only_open=only_open, elapsed=elapsed))


REPORT_HOSTS = 4096  # hosts per chunk of report_chunks


def report_chunks(res: ScanResult, *, only_open: bool = False,
                  elapsed: float | None = None) -> Iterator[str]:
    """format_report's text in pieces of REPORT_HOSTS hosts, to write as they come: a /15's
    131K host dicts and their ~800K lines at once cost ~200 MiB at the end of the scan.

    Works on the Arrow tables: comparisons use Arrow scalars built without ``pa.scalar``
    (which would import pandas — see results/_convert.py), so the CLI stays light. The rows
    are ordered by (host, port) once and each host's block is a slice: filtering the table
    once per host cost ~1.5 ms a host (0.4 s for a /24).
    """
    import pyarrow.compute as pc

    from .results._convert import scalar_str

    ports = res.tables["ports"]
    states = ports["state"].cast("string")
    lines = [f"prtip-nb {__version__} scan {res.scan_id}"]
    hosts_t = res.tables["hosts"]
    n_hosts = hosts_t.num_rows
    with_services = ports.num_rows and ports["service"].null_count < ports.num_rows
    if n_hosts > 1 and not with_services:
        blocks = _host_blocks(ports, hosts_t, only_open)
    else:
        blocks = None
    os_lines = _os_lines(res)
    traces = _trace_lines(res)  # --traceroute: host -> its TRACEROUTE lines
    scripted = None
    if res.tables["scripts"].num_rows:
        from .nse.text import by_host, interleave

        scripted = by_host(res.tables["scripts"].to_pylist())
    pending: tuple[int, str] | None = None  # (first line, host) of the last host's block

    def end_block() -> None:
        """nmap's order: port scripts under their rows, OS lines, host scripts, TRACEROUTE."""
        if pending is None:
            return
        start, host = pending
        if scripted is not None:
            lines[start:] = interleave(lines[start:], scripted.get(host))
        lines.extend(traces.get(host, ()))

    for i, h in _host_rows(hosts_t):
        end_block()
        pending = None
        if i and i % REPORT_HOSTS == 0:
            yield printable("\n".join(lines) + "\n")
            lines = []
        name = f"{h['hostname']} ({h['host']})" if h.get("hostname") else h["host"]
        pending = (len(lines), h["host"])
        lines.append(f"\nScan report for {name}")
        lines.append(f"Host is {h['state']} ({h['reason']}).")
        if h.get("pseudo_services"):  # engine.svstage: a SYN-ACK on every port, no services
            lines.append(f"Pseudo-services: {h['pseudo_reason']}; its ports are not services.")
        if blocks is not None:
            folded, shown_rows = blocks(i)
            if folded:
                lines.append(folded)
            if shown_rows:
                lines.append(f"{'PORT':<12}{'STATE':<15}REASON")
                lines.extend(shown_rows)
            else:
                lines.append("No open ports." if only_open else "No ports to show.")
            lines.extend(os_lines(h))
            continue
        mine = pc.equal(ports["host"], scalar_str(h["host"])) if n_hosts > 1 else None
        rows = ports if mine is None else ports.filter(mine)
        st = states if mine is None else states.filter(mine)
        counts = sorted(pc.value_counts(st).to_pylist(), key=lambda c: -c["counts"])
        if only_open:
            keep = pc.equal(st, scalar_str("open"))
        elif counts and counts[0]["values"] != "open" and counts[0]["counts"] > FOLD_OVER:
            # Like nmap: fold the most common state, unless it is "open" or rare.
            common = counts[0]["values"]
            lines.append(f"Not shown: {counts[0]['counts']} {common} ports")
            keep = pc.not_equal(st, scalar_str(common))
        else:
            keep = None
        shown = rows if keep is None else rows.filter(keep)
        if shown.num_rows and shown["service"].null_count < shown.num_rows:
            lines.extend(_service_lines(shown))  # -sV ran: nmap's SERVICE and VERSION columns
        elif shown.num_rows:
            lines.append(f"{'PORT':<12}{'STATE':<15}REASON")
            order = pc.sort_indices(shown["port"])
            cols = shown.take(order).select(["proto", "port", "state", "reason"]).to_pydict()
            for proto, port, state, reason in zip(
                cols["proto"], cols["port"], cols["state"], cols["reason"], strict=True
            ):
                lines.append(f"{f'{port}/{proto}':<12}{state:<15}{reason}")
        else:
            lines.append("No open ports." if only_open else "No ports to show.")
        lines.extend(os_lines(h))
    end_block()
    if not n_hosts:
        lines.append("\nNo host answered.")
    n_open = int(pc.sum(pc.equal(states, scalar_str("open"))).as_py() or 0)
    took = f" in {elapsed:.2f} s" if elapsed is not None else ""
    lines.append(f"\nDone: {n_hosts} host(s), {ports.num_rows} port rows, {n_open} open{took}.")
    lines.append(_memory_line(res))
    # Fields of imported files and hostnames are not escaped at their source, as banners
    # are: a terminal escape sequence among them must reach the screen as text.
    yield printable("\n".join(lines) + "\n")


def _os_lines(res: ScanResult) -> Callable[[dict[str, Any]], list[str]]:
    """host row -> nmap's OS lines for it (-O ran), or no lines."""
    rows = res.tables["os"].to_pylist() if res.tables["os"].num_rows else []
    if not rows and "os_fingerprint" not in res.tables["hosts"].column_names:
        return lambda h: []
    by_host: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_host.setdefault(r["host"], []).append(r)
    guess = res.meta is not None and bool(res.meta.config.get("osscan_guess"))
    return lambda h: os_text.host_lines(h, by_host.get(h["host"], []), guess=guess)


def _trace_lines(res: ScanResult) -> dict[str, list[str]]:
    if not res.tables["trace"].num_rows:
        return {}
    from .engine.tracestage import trace_lines

    return trace_lines(res.tables["trace"])


def _indices(idx: Any) -> Any:
    """numpy indices as an Arrow array for ``take`` (a numpy argument would import pandas)."""
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int64(), len(idx), [None, pa.py_buffer(idx.astype("i8"))])


def _host_rows(hosts: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, row dict) of every hosts row, REPORT_HOSTS rows converted at a time."""
    for start in range(0, hosts.num_rows, REPORT_HOSTS):
        for j, row in enumerate(hosts.slice(start, REPORT_HOSTS).to_pylist()):
            yield start + j, row


def _host_blocks(ports: Any, hosts: Any, only_open: bool) -> Any:
    """``block(i)`` -> (the "Not shown" line or "", the port lines) of host ``i``: every
    host's rows in one sort, states counted in one bincount."""
    import numpy as np
    import pyarrow.compute as pc

    from .results._convert import values

    # No to_numpy() here: it imports pandas (+34 MiB, 0.3 s) in pyarrow 26 (_convert.values).
    n_hosts = hosts.num_rows
    r = values(pc.index_in(ports["host"], value_set=hosts["host"].combine_chunks()),
               fill=n_hosts).astype(np.int64)
    st = ports["state"].combine_chunks()
    names = st.dictionary.to_pylist()
    code = values(st.indices).astype(np.int64)
    k = len(names)
    counts = np.bincount(r * k + code, minlength=(n_hosts + 1) * k).reshape(n_hosts + 1, k)
    # What each host shows: open only, or everything but its most common state when that
    # is common (nmap's "Not shown: N closed ports").
    top = counts.argmax(axis=1)
    fold = (counts[np.arange(n_hosts + 1), top] > FOLD_OVER) & (
        np.array([names[t] for t in top]) != "open")
    if only_open:
        opened = names.index("open") if "open" in names else -1
        show = code == opened
    else:
        show = ~(fold[r] & (code == top[r]))
    idx = np.flatnonzero(show)
    port = values(ports["port"]).astype(np.int64)[idx]
    idx = idx[np.lexsort((port, r[idx]))]
    bounds = np.searchsorted(r[idx], np.arange(n_hosts + 2))
    table = ports.select(["proto", "port", "state", "reason"])
    # CHUNKED: the lines of REPORT_HOSTS hosts at a time (block() is called in host order);
    # a /15's 262K lines and their Python row values at once cost ~60 MiB at the end.
    cache: dict[str, Any] = {"chunk": -1, "text": [], "at": 0}

    def lines_of(i: int) -> list[str]:
        chunk = i // REPORT_HOSTS
        if cache["chunk"] != chunk:
            lo = int(bounds[chunk * REPORT_HOSTS])
            hi = int(bounds[min((chunk + 1) * REPORT_HOSTS, n_hosts + 1)])
            shown = table.take(_indices(idx[lo:hi])).to_pydict()
            cache.update(chunk=chunk, at=lo, text=[
                f"{f'{p}/{pr}':<12}{s:<15}{why}" for pr, p, s, why in zip(
                    shown["proto"], shown["port"], shown["state"], shown["reason"], strict=True)])
        at = cache["at"]
        return list(cache["text"][bounds[i] - at:bounds[i + 1] - at])

    def block(i: int) -> tuple[str, list[str]]:
        folded = ""
        if fold[i] and not only_open:
            folded = f"Not shown: {int(counts[i, top[i]])} {names[top[i]]} ports"
        return folded, lines_of(i)

    return block


def _service_lines(shown: Any) -> list[str]:
    """PORT STATE REASON SERVICE VERSION rows; VERSION is "product version (extrainfo)"."""
    import pyarrow.compute as pc

    names = ["proto", "port", "state", "reason", "service", "tunnel", "product", "version",
             "extrainfo"]  # fmt: skip
    rows = shown.take(pc.sort_indices(shown["port"])).select(names).to_pylist()
    out = [f"{'PORT':<12}{'STATE':<14}{'REASON':<14}{'SERVICE':<16}VERSION"]
    for r in rows:
        version = " ".join(x for x in (r["product"], r["version"]) if x)
        if r["extrainfo"]:
            version = f"{version} ({r['extrainfo']})".strip()
        where = f"{r['port']}/{r['proto']}"
        service = r["service"] or ""
        if r["tunnel"] and service:  # as nmap prints it: ssl/http
            service = f"{r['tunnel']}/{service}"
        out.append(f"{where:<12}{r['state']:<14}{r['reason'] or '':<14}{service:<16}"
                   f"{version}".rstrip())  # fmt: skip
    return out


def _memory_line(res: ScanResult) -> str:
    """Peak RSS of this process and of each worker process (their sum is the scan's cost)."""
    import json

    from .engine.telemetry import peak_rss_bytes

    workers: list[int] = []
    events = res.tables["events"]
    kinds = events["kind"].cast("string").to_pylist()
    for kind, payload in zip(kinds, events["payload"].to_pylist(), strict=True):
        if kind == "EngineStats" and payload:
            workers = json.loads(payload).get("worker_peak_rss_bytes", [])
    line = f"Memory: peak RSS {peak_rss_bytes() / 2**20:.1f} MiB"
    if workers:
        line += f" + {len(workers)} workers {' + '.join(f'{w / 2**20:.1f}' for w in workers)} MiB"
        line += f" = {(peak_rss_bytes() + sum(workers)) / 2**20:.1f} MiB"
    return line


def _cmd_read(args: argparse.Namespace) -> int:
    from .results import list_scans

    df = list_scans(args.root)
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(printable(df.to_string(index=False)))  # imported files name the targets
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from .reporting import report
    from .results import list_scans, read_scans

    scan_id = args.scan_id
    if scan_id is None:
        scans = list_scans(args.root)
        if scans.empty:
            print(f"prtip-nb: no scans in {args.root}", file=sys.stderr)
            return EXIT_FAIL
        scan_id = str(scans.sort_values("started")["scan_id"].iloc[-1])
    res = read_scans(args.root, scan_id=scan_id)
    # The summary says what changed since the last earlier scan of the same targets.
    earlier = _earlier_scan(list_scans(args.root), scan_id)
    previous = read_scans(args.root, scan_id=earlier) if earlier else None
    path = report(res, args.output, previous=previous)
    against = f", compared with scan {earlier}" if earlier else ""
    print(f"HTML report of scan {scan_id}{against}: {path}")
    return EXIT_OK


def _earlier_scan(scans: pd.DataFrame, scan_id: str) -> str | None:
    """The latest complete scan of the same targets that started before ``scan_id``."""
    this = scans[scans["scan_id"] == scan_id]
    if this.empty:
        return None
    row = this.iloc[0]
    same = scans[(scans["targets"] == row["targets"]) & (scans["started"] < row["started"])
                 & scans["complete"]]
    return None if same.empty else str(same.sort_values("started")["scan_id"].iloc[-1])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
