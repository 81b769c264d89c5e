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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from . import _cliguard as guard
from ._termsafe import printable
from ._textreport import format_report, memory_line, report_chunks
from .errors import PrtipError, SpecError
from .interop import commands as interop_commands
from .osdetect import text as os_text

if TYPE_CHECKING:
    import pandas as pd

    from .engine.scan import Scan

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
STOP_TIMEOUT = 30.0  # seconds a cancelled scan gets to stop and save after Ctrl-C


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
    s.add_argument("-g", "--source-port", type=int, metavar="PORT",
                   help="send the -sS and -sU probes from this source port")
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
    s.add_argument("--versiondb", dest="service_probes", metavar="FILE|nmap",
                   help="-sV: match with this nmap-service-probes file ('nmap': the installed "
                        "nmap's) instead of prtip_nb's probes")
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
    if argv is None:  # the program: no collection while it imports (the scan resumes it)
        guard.pause_gc()
    _lean_allocator()
    guard.lean_start()
    try:
        args = build_parser().parse_args(argv)
        args.drop_root = argv is None if drop_root is None else drop_root
        with warnings.catch_warnings():
            # One line per warning, as the other messages: not Python's file:line and source.
            warnings.showwarning = guard.show_warning
            code = _dispatch(args)
    finally:
        guard.resume_gc()
    if argv is None:  # the program: its outputs are written and closed; skip the teardown
        guard.exit_now(code)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command != "scan":
        guard.resume_gc()  # only a port scan's start-up is run without collection
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
    _mmap_threshold(65536)


def _mmap_threshold(size: int) -> None:
    """glibc's M_MMAP_THRESHOLD, unless the environment set it (or the libc is not glibc)."""
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).mallopt(-3, size)  # M_MMAP_THRESHOLD (glibc); fixes it, too
        except (AttributeError, OSError):  # not glibc (musl): keep its defaults
            pass


def _streaming_allocator(sc: Any) -> None:
    """A scan that streams its rows to ``-o`` (holding only the open ones) converts and
    frees ~100 B a probe in 16K-row batches: with the 64 KiB threshold every 128 KiB column
    was a fresh mmap, page-faulted in and unmapped again (a TLB shootdown on each core).
    Measured on a /18 x top 100 (1.6M probes): 0.5 us of CPU a probe of ~6.4, 8% of the
    scan's speed, in the flush thread alone. Its peak RSS is not its rows (they are on
    disk), and the poller's malloc_trim every 2 s returns what the heap frees, so these
    buffers may come from the heap: same peak RSS measured (/18: 161 against 165 MiB)."""
    config, total = getattr(sc, "config", None), getattr(sc, "counters", None)
    if config is not None and total is not None and config.held_rows(total.total) == "open":
        _mmap_threshold(4 << 20)


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
        "source_port": args.source_port,
        "service_probes": args.service_probes,
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
    if args.list_only or args.ping_only or not args.Pn:
        guard.resume_gc()  # -sL, -sn and discovery run with collection (pause_gc)
    if args.list_only:
        return _cmd_list(args, options)
    if options["os"]:  # -O: before discovery sends its pings
        from .engine.osstage import preflight

        preflight(family=args.family, os_db=args.os_db)
    if args.ping_only:  # -sn: discovery is the whole scan
        from ._textreport import format_sweep
        from .engine.discovery import discover, sweep_options

        t0 = time.monotonic()
        res = discover(list(args.targets), output=options.get("output"),
                       **sweep_options(options))
        # Hostnames come from DNS: no escape sequence gets through.
        text = printable(format_sweep(res, time.monotonic() - t0))
        sys.stdout.write(text + memory_line(res) + "\n")
        guard.write_normal(args.normal_output, text)
        interop_commands.write_scan_outputs(res, args)  # -oX, -oJ, -oG
        if args.output:
            print(f"Parquet dataset: {os.path.join(args.output, f'scan_id={res.scan_id}')}")
        return EXIT_OK
    from .engine.discovery import DISCOVER_BY_DEFAULT, discover_then

    # Discover first as nmap does (-Pn: not); the rule is engine.discovery's, as pn.scan's.
    todo = discover_then(args.targets, options, discover=DISCOVER_BY_DEFAULT["cli"] and not args.Pn,
                         distributed=bool(args.dask or args.shards))
    if todo.nothing_up:
        print("Note: no host seems up. If they are, but block ping probes, try -Pn.")
        return EXIT_OK
    args.targets, options = todo.targets, todo.options
    from .engine.scan import Scan  # not before: -sL and -sn do without it (and pyarrow's load)

    sc: Any
    if args.dask or args.shards:
        from .engine.distributed import DistributedScan

        sc = DistributedScan(args.targets, args.ports, cluster=args.dask, shards=args.shards,
                             **options)
    else:
        sc = Scan(args.targets, args.ports, **options)
        _streaming_allocator(sc)
    log = open(args.event_log, "w") if args.event_log else None  # noqa: SIM115
    if log is not None:
        sc.subscribe(lambda ev: log.write(_event_json(ev) + "\n"))
    ended = sc.events(ScanCompleted)  # iterators get every terminal event: the wait below
    sc.start()
    guard.resume_gc()  # the scan path is imported (pyarrow too): collect as usual from here
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
