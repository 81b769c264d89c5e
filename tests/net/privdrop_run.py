"""Run ``prtip-nb`` as the program, with a parser bug planted for the privilege tests.

``python privdrop_run.py ROOT_ONLY_FILE scan ...``: the X.509 parser and the banner
matcher's entry are wrapped; each time one runs on data from the network, it reports
the process's credentials (/proc/self/status, every thread) on stderr as one
``PRIVDROP-HOOK {json}`` line and tries what a parser bug could: append to
ROOT_ONLY_FILE (root-owned, mode 0644) and create a file beside it. The scan then goes
on as usual. Only tests run this file.
"""

from __future__ import annotations

import json
import os
import sys

from prtip_nb.net.privileges import proc_status
from prtip_nb.service import tls

TARGET = sys.argv.pop(1)
_seen: set[str] = set()


def _attack(where: str) -> None:
    if where in _seen:
        return
    _seen.add(where)
    tasks = {t: proc_status(f"self/task/{t}") for t in os.listdir("/proc/self/task")}
    tries = {}
    for name, path, mode in (("append", TARGET, "a"),
                             ("create", os.path.join(os.path.dirname(TARGET), "new"), "x")):
        try:
            with open(path, mode) as fh:
                fh.write("written by a parser\n")
            tries[name] = "written"
        except OSError as exc:
            tries[name] = exc.errno
    print("PRIVDROP-HOOK " + json.dumps({"where": where, "pid": os.getpid(),
                                         "self": proc_status(), "tasks": tasks,
                                         "tries": tries}), file=sys.stderr, flush=True)


_parse = tls.parse_certificate


def parse_certificate(der: bytes) -> tls.CertInfo:
    _attack("x509")
    return _parse(der)


tls.parse_certificate = parse_certificate

from prtip_nb.service import detect  # noqa: E402

_read = detect.Detector._read


async def _read_banner(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    out = await _read(self, *args, **kwargs)  # the reply's bytes are in: now match them
    _attack("banner")
    return out


detect.Detector._read = _read_banner  # type: ignore[method-assign]

from prtip_nb.cli import main  # noqa: E402

sys.exit(main())
