"""Probes: the packets prtip_nb sends, and how it reads what comes back. Pure.

Modules here build and parse bytes (numpy for whole batches) and nothing else: no
``socket``, ``select``, ``threading``, ``asyncio``, nor the engine or ``net/`` (an
import-linter contract in pyproject.toml holds this; see docs/architecture.md, "Layers").

- ``tcp``: SYN templates and checksums; ``cookie``: the keyed probe cookies;
- ``udp``: UDP payloads by port; ``ping``: ICMP/TCP ping and ARP/NDP bytes;
- ``records``: the 25-byte verdict record every engine writes.

Service detection (sockets, asyncio) is ``prtip_nb.service``; its scan stage is
``engine.svstage``. Nothing is imported here; ``import prtip_nb`` never loads this package.
"""

from __future__ import annotations
