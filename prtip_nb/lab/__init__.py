"""The built-in target lab: local services with known ground truth, and private namespaces.

``Lab`` runs plain TCP listeners, HTTP, HTTPS, SSH/SMTP/FTP banners and a UDP echo on one
background thread, and says exactly what a scan of it should find (``Lab.truth``).
``RangeLab`` answers for a whole prefix of 198.18.0.0/15 behind a veth link (drops, a
bottleneck, ground truth at any size), for scans of networks rather than loopback.
The namespace helpers keep scans of the lab off the host's shared loopback.
Importing this package imports neither pandas nor pyarrow nor cryptography.
"""

from __future__ import annotations

from prtip_nb.lab.lab import DEFAULT_LAYOUT, Lab
from prtip_nb.lab.mode import Mode, notebook_mode, sample_dir
from prtip_nb.lab.netns import (
    can_unshare,
    in_private_netns,
    lo_up,
    reexec_in_private_netns,
    run_in_private_netns,
)
from prtip_nb.lab.rangelab import RangeLab
from prtip_nb.lab.rangetruth import RangeTruth

__all__ = [
    "DEFAULT_LAYOUT",
    "Lab",
    "Mode",
    "RangeLab",
    "RangeTruth",
    "can_unshare",
    "in_private_netns",
    "lo_up",
    "notebook_mode",
    "reexec_in_private_netns",
    "run_in_private_netns",
    "sample_dir",
]
