"""Interoperability: other tools' files in, other tools' formats out, and scan datasets.

- ``nmap_xml``: nmap ``-oX`` in (streaming) and out (valid against nmap.dtd, ndiff-clean).
- ``masscan``: masscan ``-oJ`` / ``-oD`` / ``-oL`` / ``-oX`` in.
- ``writers``: JSON Lines, CSV and nmap's greppable (``-oG``) out.
- ``diff``: what changed between two scans, as a DataFrame.
- ``sql``: DuckDB over a dataset of scans (optional dependency).

Every reader returns a :class:`~prtip_nb.results.ScanResult` with the results schema; every
writer is also a ScanResult method. Nothing here is imported by ``import prtip_nb``.
"""
