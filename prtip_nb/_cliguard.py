"""The command line's guards: what is checked before a scan sends anything, and what is
said, in one line, when a scan cannot finish (issue 16: files and faults).

- ``preflight``: options, ports and every output path, as nmap checks its output files
  first: a scan must not run for an hour and then fail to save.
- ``saved``: what a cut-short scan left on disk and the command that continues it.
- ``hint``: the fix for the OS error under a failure (a low ``ulimit -n``, a full disk).
- ``drop_root``: as root, open the scan's raw sockets, then become the sudo caller (or
  nobody) with no capabilities, before any packet or file is read (net.privileges).
- Every line passes ``printable``: messages echo file contents and names.
- ``lean_start`` / ``pause_gc`` / ``resume_gc`` / ``exit_now``: the fixed costs of a run as a
  program, cut at both ends (docs/architecture.md, "Start-up and the end of a short scan").
"""

from __future__ import annotations

import argparse
import errno
import gc
import ipaddress
import os
import sys
from typing import Any, NoReturn, TextIO

from ._termsafe import printable
from .errors import ConfigError, DatasetError, PrtipError
from .interop import commands as interop_commands

__all__ = ["denied_hint", "drop_root", "exit_now", "hint", "lean_start", "os_error", "pause_gc",
           "preflight", "prewarm_capture", "resume_gc", "saved", "show_warning", "write_normal"]


_FIXES = {
    errno.EMFILE: "raise the limit (ulimit -n 4096) or lower --concurrency",
    errno.ENFILE: "raise the limit (ulimit -n 4096) or lower --concurrency",
    errno.ENOSPC: "free some space, then resume",
}


def show_warning(message: Warning | str, category: type[Warning], filename: str,
                 lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: one line, as the other messages."""
    print(f"prtip-nb: warning: {printable(str(message))}", file=sys.stderr)


def os_error(exc: OSError) -> str:
    """An OSError that reached the CLI, as one line with its fix."""
    text = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return text + hint(exc)


def hint(exc: BaseException) -> str:
    """``"; <fix>"`` for the OS error under ``exc`` (its cause chain), or ``""``."""
    seen: BaseException | None = exc
    for _ in range(8):  # bounded: a cause chain can loop
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in _FIXES:
            return f"; {_FIXES[seen.errno]}"
        seen = seen.__cause__ or seen.__context__
    return ""


def preflight(args: argparse.Namespace, options: dict[str, Any]) -> None:
    """Check the options, ports and output paths before anything is sent (as nmap checks
    its output files first): a scan must not run for an hour and then fail to save."""
    from ._fileio import check_output_dir, check_writable
    from .config import ScanConfig
    from .targets import parse_ports

    ScanConfig(targets=tuple(args.targets), ports=args.ports, **options)  # rate, timing, ...
    method = options.get("method")
    parse_ports(args.ports, top_ports=args.top_ports,
                default_proto="udp" if method == "udp" else "tcp")
    files = [("-oN", args.normal_output), ("--event-log", args.event_log)]
    files += [(flag, getattr(args, attr, None)) for flag, attr, _ in interop_commands.OUTPUTS]
    for flag, path in files:
        why = path and check_writable(path, what=f"{flag} file")
        if why:
            raise ConfigError(why + _as_whom(), token=path)
    why = args.output and check_output_dir(args.output, what="-o folder")
    if why:
        raise ConfigError(why + _as_whom(), token=args.output)


def denied_hint(exc: BaseException) -> str:
    """After the drop, for a file the new user may not read or write: who it is and the
    ways out; else ""."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, PermissionError) or "Permission denied" in str(seen):
            return _as_whom("let {user} read or write it")
        seen = seen.__cause__ or seen.__context__
    return ""


def _as_whom(fix: str = "choose a place {user} can write") -> str:
    """Who could not write: after the drop, the user the scan became, and the ways out."""
    from .net.privileges import dropped

    d = dropped()
    if d is None:
        return ""
    return (f" (the scan runs as user {d.user} once its raw sockets are open: "
            f"{fix.format(user=d.user)}, run through sudo from an account that can, or pass "
            "--privileged to keep root)")


def _local_only(args: argparse.Namespace) -> bool:
    """Every target is a loopback literal and none comes from a file: discovery is skipped."""
    if args.input_file or not args.targets:
        return False
    for t in args.targets:
        try:
            if not ipaddress.ip_network(t, strict=False).is_loopback:
                return False
        except ValueError:
            if t != "localhost":
                return False
    return True


def drop_root(args: argparse.Namespace) -> None:
    """As root, run as the program, for a scan that sends raw packets (-sS, -sU, -sn, or
    host discovery): open its raw and capture sockets now, create a missing -o folder for
    the user to come, then become the sudo caller (or nobody) with no capabilities.
    Everything after -- reading -iL, parsing packets, banners, certificates, writing
    outputs -- runs as that user. Dask runs (--dask, --shards) keep root: their workers
    open their own sockets."""
    if not getattr(args, "drop_root", False) or args.privileged or os.geteuid() != 0:
        return
    if args.dask or args.shards:
        return
    if getattr(args, "list_only", False):
        return  # -sL sends DNS queries only: no raw socket, no discovery (nor its helper)
    raw_scan = args.method in ("syn", "udp", "auto")
    discovery = args.ping_only or not (args.Pn or args.shard or _local_only(args))
    if not (raw_scan or discovery):
        return  # a connect scan of loopback, or with -Pn: no raw socket at all
    from .net import privileges

    name, uid, gid = privileges.target_user()
    bad = privileges.unreadable_for(uid, gid, privileges.install_paths())
    if bad is not None:  # dropping would break the scan's first late import: keep root
        print(f"prtip-nb: warning: keeping root: user {name} cannot read {bad} (Python or "
              "prtip_nb is installed where only root can read); install it where other "
              "users can read, or run through sudo from such a user's account",
              file=sys.stderr)
        return
    stages = 2 if args.udp and args.method == "syn" else 1  # -sS -sU: two captures
    privileges.open_pool(capture=stages if raw_scan else 0, discovery=discovery)
    if args.output:
        _make_dirs_for(args.output, uid, gid)
    privileges.become()
    from .net.capture import discard_warm

    discard_warm()  # the scan captures through the pool's sockets: none is left unused


def _make_dirs_for(path: str, uid: int, gid: int) -> None:
    """Create the missing folders of ``path`` as root and give them to ``uid``: the scan
    writes there after the drop. Existing folders are left as they are (checked later)."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d)
            os.chown(d, uid, gid)
        except OSError:
            return  # preflight says why, as the user


def write_normal(path: str | None, text: str) -> None:
    """-oN: the text report, written whole or not at all."""
    if path:
        from ._fileio import atomic_file

        try:
            with atomic_file(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise DatasetError(f"could not write -oN file {path}: {exc.strerror or exc}") from exc


def saved(root: str | None, scan_id: str | None) -> str:
    """What a cut-short scan left on disk, and how to continue it."""
    if not root or not scan_id:
        return "nothing was saved (no -o DIR); run again with -o DIR to keep partial results"
    from .results import _files

    try:
        directory = _files.scan_dir(root, scan_id)
        rows = 0
        if directory.is_dir():
            import pyarrow.parquet as pq

            for part in _files.parts(directory, "ports"):
                try:
                    rows += pq.read_metadata(part).num_rows
                except (OSError, ValueError):
                    continue  # a damaged part: read_scans reports it
    except PrtipError:
        return "nothing was saved"
    if (directory / "_checkpoint.json").exists():
        how = f"continue with: prtip-nb resume {root} {scan_id}"
    else:
        how = "no checkpoint was written, so it cannot be resumed"
    return f"saved {rows} port rows in {directory}; {how}"


def prewarm_capture(args: argparse.Namespace) -> None:
    """As root, for a SYN or UDP scan: set up its capture ring now, on a thread, while the
    engine is imported (``net.capture.prewarm``: the kernel's ring set-up waits 8-20 ms for
    an RCU grace period, which then no longer comes before the first probe). The family is
    guessed from the targets (IPv6 with -6 or a literal with ':'); a ring no scan takes is
    released at the end of the first capture."""
    if os.geteuid() != 0 or args.list_only or args.ping_only or args.dask or args.shards:
        return
    udp_only = args.udp and args.method in (None, "udp")
    if not (udp_only or args.method == "syn"):
        return
    family = 6 if args.family == 6 or any(":" in t for t in args.targets) else 4
    from .net.capture import prewarm

    prewarm([family], blocks=16 if udp_only else 8)  # engine.udp's ring, or engine.syn's


def lean_start() -> None:
    """Before numpy loads: one OpenBLAS thread. The scanner never multiplies matrices, and
    numpy's import starts a BLAS thread per core that spins up at once: measured on a 2-core
    box, ``import numpy`` took 100-120 ms of CPU with them, 79-83 ms with one. The
    environment wins (a user's setting is kept); children inherit it (workers, too)."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


_GC_PAUSED: list[bool] = []  # [True] while pause_gc's pause lasts


def pause_gc() -> None:
    """No cyclic garbage collection while the program starts (``resume_gc`` ends it).

    Importing the scan path (numpy, pyarrow, pyarrow.compute, prtip_nb: ~300,000 objects)
    triggered ~70 young and ~6 middle-generation collections that found ~500 objects to
    free: 5-10 ms of a short scan's run, measured with ``gc.callbacks``. Only for
    ``prtip-nb`` run as the program (``main()`` called from Python leaves its caller's
    collector alone), and only until the scan starts: nothing long-running runs paused."""
    if gc.isenabled():
        gc.disable()
        _GC_PAUSED.append(True)


def resume_gc() -> None:
    """End ``pause_gc``'s pause (a no-op without one): what the start-up loaded is moved to
    the permanent generation (``gc.freeze``), so later full collections no longer walk
    the modules' objects, then collection goes on as usual."""
    if _GC_PAUSED:
        _GC_PAUSED.clear()
        gc.freeze()
        gc.enable()


def exit_now(code: int) -> NoReturn:
    """End the program without the interpreter's teardown: flush stdout and stderr, then
    ``os._exit``. Tearing down pyarrow, numpy (and pandas, for read/report) module by
    module took 60-80 ms after the last line was written, a quarter of a /24 scan's run.
    Only for ``prtip-nb`` run as the program, once every file is closed (each command
    writes its outputs through ``with`` blocks and joins its threads before returning);
    under a tracer or coverage, the usual exit, so their atexit hooks still run."""
    if sys.gettrace() is not None or sys.getprofile() is not None or "coverage" in sys.modules:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head) or stream: nothing to keep
            pass
    os._exit(code)
