"""OS detection as nmap does it (``-O``): see docs/osdetect.md.

Pure modules (no sockets, threads or engine imports): ``probes``, ``replies``,
``fingerprint``, ``osdb``, ``detect``, ``text``, ``passive``. The scan's hook is
``prtip_nb.engine.osstage``; it sends through ``prtip_nb.net.osscan``. Nothing is
imported here: ``import prtip_nb`` stays light.
"""
