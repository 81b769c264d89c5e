"""notebook_mode(): a notebook scans its own lab only as root in a private namespace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prtip_nb.lab import notebook_mode, sample_dir
from tests.conftest import in_netns


def test_sample_data_is_found_and_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRTIP_NB_SAMPLE", raising=False)
    assert (sample_dir() / "scans").is_dir()  # this checkout's data/sample
    monkeypatch.setenv("PRTIP_NB_MODE", "sample")
    mode = notebook_mode()
    assert not mode.live and "PRTIP_NB_MODE=sample" in str(mode)
    monkeypatch.setenv("PRTIP_NB_SAMPLE", "/elsewhere")
    assert notebook_mode().sample == Path("/elsewhere")


def test_live_only_as_root_in_a_private_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRTIP_NB_MODE", raising=False)
    mode = notebook_mode()
    assert mode.live == (os.geteuid() == 0 and in_netns()), mode
    if not mode.live:
        assert mode.why and "sample data from" in str(mode)
