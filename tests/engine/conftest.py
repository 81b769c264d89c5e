"""Fixtures shared by the engine tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import need

DROPPED = "1000-4999"  # 127.0.0.1 TCP ports whose SYNs nftables drops: no answer, ever


@pytest.fixture
def dropped(netns: None) -> Iterator[str]:
    """An nftables rule in this namespace drops SYNs to 127.0.0.1:1000-4999 on input (only
    inside the suite's private namespace: never a rule on the host)."""
    need(shutil.which("nft") is not None, "needs nftables (apt-get install nftables)")
    rules = (
        "add table inet prtip_test\n"
        "add chain inet prtip_test input { type filter hook input priority 0; }\n"
        f"add rule inet prtip_test input ip daddr 127.0.0.1 tcp dport {DROPPED} drop\n"
    )
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    yield DROPPED
    subprocess.run(["nft", "delete", "table", "inet", "prtip_test"], check=False)
