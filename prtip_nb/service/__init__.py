"""Service and version detection (``-sV``): connections, probes, matching, TLS.

This package talks to services over ordinary sockets (asyncio, threads for matching), so
it sits beside ``net/`` in the layers, above the pure packet modules of ``probes/``
(docs/architecture.md, "Layers"). The scan's ``-sV`` stage that drives it from a ``Scan``
is ``engine.svstage``.

- ``servicedb``: the probe/match database (the project's own TOML file);
- ``nmapdb``: optionally, an installed nmap's ``nmap-service-probes``, translated at run time;
- ``matcher``: a reply against a probe's rules, incrementally, each search under a timeout;
- ``matchpool``: matching off the event loop, least-served service first;
- ``regexguard``: static and measured bounds on regex backtracking;
- ``text``: escapes in (probe payloads) and out (everything a peer sends), templates;
- ``service``: many ports at once (``ServiceScanner``, ``detect_services``), tarpits;
- ``detect``: one port: NULL probe, probes, TLS, every byte and time bound;
- ``conn``: one connection, plain or TLS over memory BIOs; ``outcome``: replies, results;
- ``tls``: certificate parsing (imports cryptography: only once a handshake happened).

Nothing is imported here; ``import prtip_nb`` never loads this package.
"""

from __future__ import annotations
