"""OS detection as nmap does it (``-O``): see docs/osdetect.md.

Pure modules (no sockets, threads or engine imports): ``probes``, ``replies``,
``fingerprint``, ``osdb``, ``detect``, ``text``, ``passive``. ``stage`` is the scan's hook
and sends through ``prtip_nb.net.osscan``. Nothing is imported here: ``import prtip_nb``
stays light.
"""
