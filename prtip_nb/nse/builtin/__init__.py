"""The built-in scripts, written for prtip_nb from the protocols' documents (no NSE code).

Each module's scripts carry their output in their docstring; ``SCRIPTS`` lists them all
in the order ``--script all`` runs them.
"""

from __future__ import annotations

from prtip_nb.nse.builtin import dns, http, jarm, ssh, text, tls

SCRIPTS = [*text.SCRIPTS[:1], *http.SCRIPTS, *tls.SCRIPTS, *jarm.SCRIPTS, *ssh.SCRIPTS,
           *text.SCRIPTS[1:], *dns.SCRIPTS]  # fmt: skip

__all__ = ["SCRIPTS"]
