"""``python -m prtip_nb.lab``: run the lab in the foreground, in its own process.

Benchmarks run the lab this way so that the scanner's peak RSS is its own. Once every port
is bound, one line ``READY <json>`` goes to stdout (or, with ``--ready-fd N``, to file
descriptor N, which is then closed). The JSON holds ``host``, the open ports by protocol
(``tcp``, ``udp``), ``services`` (name -> port), ``closed`` and ``tcp_plain``.

The lab then runs until SIGTERM, SIGINT, or end of file on stdin. Stdin is watched only if
it is a pipe or a terminal: a job started with stdin on /dev/null would otherwise stop at
once. Exit status 0 after a clean stop, 2 for a bad option or no service at all (``ConfigError``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from prtip_nb.errors import ConfigError
from prtip_nb.lab.lab import DEFAULT_LAYOUT, SERVICES, Lab


def _ports(text: str) -> int | list[int]:
    """``50`` is a count; ``8000,8001`` (or ``8000,``) is an explicit list."""
    if "," in text:
        return [int(p) for p in text.split(",") if p.strip()]
    return int(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m prtip_nb.lab", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="IP address to bind (default 127.0.0.1)")
    p.add_argument("--tcp", type=_ports, help="plain listeners: a count from --base-port, or a,b,c")
    p.add_argument("--closed", type=_ports, help="TCP ports held closed: a count, or a,b,c")
    for name in SERVICES:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, metavar="PORT")
    p.add_argument("--base-port", type=int, help="first port of the --tcp/--closed counts")
    p.add_argument("--defaults", action="store_true", help="start from the demo's layout")
    p.add_argument("--ephemeral", action="store_true", help="with --defaults: kernel-picked ports")
    p.add_argument("--tls-cert", metavar="PEM",
                   help="https serves this certificate (one PEM file: certificate and key)")
    p.add_argument("--ready-fd", type=int, metavar="N", help="write READY to fd N, not stdout")
    return p.parse_args(argv)


def build_lab(args: argparse.Namespace) -> Lab:
    given = {k: getattr(args, k) for k in ("tcp", "closed", *SERVICES)}
    if args.defaults:
        overrides = {k: v for k, v in given.items() if v is not None}
        if args.base_port is not None:
            overrides["base_port"] = args.base_port
        return Lab.defaults(args.host, ephemeral=args.ephemeral, tls_cert=args.tls_cert,
                            **overrides)
    if all(v is None for v in given.values()):
        raise ConfigError(
            "nothing to run",
            hint="name some services (--tcp 50 --http 8080 ...)"
            " or pass --defaults for the demo's layout",
        )
    base_port = DEFAULT_LAYOUT["base_port"] if args.base_port is None else args.base_port
    return Lab(args.host, base_port=base_port, tls_cert=args.tls_cert, **given)


def ready_line(lab: Lab) -> str:
    info = {
        "host": lab.host,
        **lab.open_ports,
        "services": lab.services,
        "closed": lab.closed_ports,
        "tcp_plain": lab.tcp_ports,
    }
    return "READY " + json.dumps(info, separators=(",", ":")) + "\n"


def _watch_stdin(stop: threading.Event) -> None:
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0)):
        return

    def drain() -> None:
        try:
            while os.read(0, 4096):  # ends at EOF; the bytes themselves mean nothing
                pass
        except OSError:
            pass
        stop.set()

    threading.Thread(target=drain, name="prtip-lab stdin", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        lab = build_lab(args).start()
    except ConfigError as exc:
        print(f"prtip_nb.lab: {exc}", file=sys.stderr)
        return 2
    try:
        line = ready_line(lab)
        if args.ready_fd is not None:
            with os.fdopen(args.ready_fd, "w") as f:
                f.write(line)
        else:
            sys.stdout.write(line)
            sys.stdout.flush()
        _watch_stdin(stop)
        # Wake now and then so the main thread runs the signal handler promptly.
        while not stop.wait(0.5):
            pass
    finally:
        lab.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
