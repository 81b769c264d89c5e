"""Can this kernel scan a lab of its own, or should a notebook read the sample data?

The teaching notebooks scan labs they build themselves. That is safe, and possible, only as
root inside a private network namespace (``scripts/in-netns``, or the Jupyter kernel that
``scripts/netns-kernel`` installs): there the loopback and any veth lab belong to the
notebook alone. Anywhere else (an unprivileged user, a locked-down JupyterHub, root on a
shared host) a notebook reads the recorded runs in ``data/sample`` instead, and says so.

``PRTIP_NB_MODE=sample`` forces the sample data even where scanning is possible;
``PRTIP_NB_SAMPLE=<dir>`` points at another copy of ``data/sample``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Mode", "notebook_mode", "sample_dir"]


@dataclass(frozen=True)
class Mode:
    """What a notebook may do here: ``live`` scans its own lab; otherwise ``sample`` is read."""

    live: bool
    why: str
    sample: Path

    def __str__(self) -> str:
        if self.live:
            return f"live: scanning this notebook's own lab ({self.why})"
        return f"sample data from {self.sample} ({self.why})"


def sample_dir() -> Path:
    """``data/sample`` of this checkout (or ``$PRTIP_NB_SAMPLE``)."""
    env = os.environ.get("PRTIP_NB_SAMPLE")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "data" / "sample"
    if here.is_dir():
        return here
    return Path("..") / "data" / "sample"  # a notebook run from notebooks/


def notebook_mode() -> Mode:
    """Decide once, at the top of a notebook: scan a private lab, or read the sample data."""
    from prtip_nb.config import is_privileged
    from prtip_nb.lab.netns import in_private_netns

    sample = sample_dir()
    if os.environ.get("PRTIP_NB_MODE") == "sample":
        return Mode(False, "PRTIP_NB_MODE=sample", sample)
    root = os.geteuid() == 0 and is_privileged()
    private = os.environ.get("PRTIP_NB_NETNS") == "1" or in_private_netns()
    if root and private:
        return Mode(True, "root in a private network namespace", sample)
    if root:
        why = ("root, but in a shared network namespace: start the kernel with "
               "`sudo scripts/netns-kernel` to scan")
    else:
        why = "no root: raw sockets and network namespaces are out of reach"
    return Mode(False, why, sample)
