"""``python -m prtip_nb.lab.farm``: many ports of each lab service, in their own process.

For benchmarks that need hundreds of services (``Lab`` runs one port per kind):

    python -m prtip_nb.lab.farm --base-port 20000 --http 200 --https 200 --ssh 200 \\
        --smtp 200 --ftp 200            # or --endless 1000, --wrapped 50, ...

Ports are consecutive from ``--base-port`` in the order the kinds are given on the command
line. Plain kinds (http, https, ssh, smtp, ftp) run on the lab's selector loop, hostile ones
on ``HostileServer``. One line ``READY {"kind": [ports], ...}`` goes to stdout once every
port is bound; the farm runs until SIGTERM/SIGINT or end of file on stdin.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from prtip_nb.lab.hostile import KINDS as HOSTILE
from prtip_nb.lab.hostile import HostileServer
from prtip_nb.lab.loop import EventLoop
from prtip_nb.lab.services import bind, serve

PLAIN = ("http", "https", "ssh", "smtp", "ftp")


def start_farm(
    host: str, counts: Sequence[tuple[str, int]], base_port: int
) -> tuple[EventLoop, HostileServer | None, dict[str, list[int]]]:
    """Bind and serve ``counts`` (kind, n) from ``base_port`` up; returns what to stop."""
    layout: dict[str, list[int]] = {}
    port = base_port
    for kind, n in counts:
        if kind not in PLAIN and kind not in HOSTILE:
            raise ValueError(f"unknown service kind {kind!r}")
        layout[kind] = list(range(port, port + n))
        port += n
    if port > 65536:
        raise ValueError(f"{port - base_port} ports do not fit above {base_port}")
    tls = None
    if layout.get("https"):
        from prtip_nb.lab.tlscert import make_cert, server_context

        tls = server_context(make_cert(host))
    loop = EventLoop(name="prtip-lab farm", idle_timeout=30.0)
    socks: list[socket.socket] = []
    hostile: HostileServer | None = None
    try:
        for kind in PLAIN:
            for p in layout.get(kind, []):
                sock = bind(host, p, "tcp")
                socks.append(sock)
                serve(loop, kind, sock, tls)
        wanted = {k: v for k, v in layout.items() if k in HOSTILE and v}
        if wanted:
            hostile = HostileServer(host, wanted).start()
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    loop.start()
    return loop, hostile, layout


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prtip_nb.lab.farm", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=20000)
    for kind in (*PLAIN, *HOSTILE):
        p.add_argument(f"--{kind}", type=int, default=0, metavar="N")
    args = p.parse_args(argv)
    given = [a.lstrip("-").split("=")[0] for a in (argv or sys.argv[1:]) if a.startswith("--")]
    order = [k for k in given if k in (*PLAIN, *HOSTILE)]
    counts = [(k, getattr(args, k)) for k in order if getattr(args, k) > 0]
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loop, hostile, layout = start_farm(args.host, counts, args.base_port)
    try:
        sys.stdout.write("READY " + json.dumps(layout, separators=(",", ":")) + "\n")
        sys.stdout.flush()

        from prtip_nb.lab.__main__ import _watch_stdin

        _watch_stdin(stop)  # end of a piped stdin (the parent went away) stops the farm too
        while not stop.wait(0.5):
            pass
    finally:
        loop.stop()
        if hostile is not None:
            hostile.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
