"""-O's flags and its errors before anything is sent (no network needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import prtip_nb as pn
from prtip_nb.errors import ConfigError


def test_missing_os_db_fails_before_the_scan(tmp_path):
    missing = tmp_path / "nope" / "nmap-os-db"
    with pytest.raises(ConfigError, match="cannot read nmap-os-db"):
        pn.scan("198.51.100.1", "22", method="syn", os=True, os_db=str(missing))
    with pytest.raises(ConfigError, match="IPv4 only"):
        pn.scan("2001:db8::1", "22", method="syn", os=True, family=6)


def test_cli_flags_reach_the_config_and_errors_exit_2(tmp_path):
    import argparse

    from prtip_nb.osdetect import text

    p = argparse.ArgumentParser()
    text.add_arguments(p)
    args = p.parse_args(["-O", "--osscan-limit", "--fuzzy", "--os-db", "x"])
    assert text.options(args) == {"os": True, "osscan_limit": True, "osscan_guess": True,
                                  "os_db": "x"}
    args = p.parse_args([])
    args.aggressive = True  # -A implies -O
    assert text.options(args)["os"] is True
    out = subprocess.run([sys.executable, "-m", "prtip_nb.cli", "scan", "-sS", "-O", "--os-db",
                          str(tmp_path / "missing"), "-p", "22", "198.51.100.1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "nmap-os-db" in out.stderr


def test_report_lines_as_nmap_prints_them():
    from prtip_nb.osdetect.text import SUBMIT, host_lines

    cls = {"type": "general purpose", "vendor": "Linux", "family": "Linux",
           "generation": "5.X", "cpe": ["cpe:/o:linux:linux_kernel:5"]}
    host = {"os_fingerprint": ["OS:SCAN(V=1%G=Y%P=x)T1(R=Y)"], "distance": 1,
            "sequences": '{"ipidsequence": {"class": "All zeros"}}'}
    lines = host_lines(host, [{"name": "Linux 5.0 - 5.4", "accuracy": 100, "classes": [cls]}])
    assert lines[:4] == ["Device type: general purpose", "Running: Linux Linux 5.X",
                         "OS CPE: cpe:/o:linux:linux_kernel:5", "OS details: Linux 5.0 - 5.4"]
    assert "Network Distance: 1 hop" in lines and "TCP/IP fingerprint:" not in lines
    guesses = [{"name": "A", "accuracy": 96, "classes": []},
               {"name": "B", "accuracy": 93, "classes": []}]
    plain = host_lines(host, guesses)
    assert SUBMIT in plain and not any(x.startswith("Aggressive") for x in plain)
    guessed = host_lines(host, guesses, guess=True)
    assert "Aggressive OS guesses: A (96%), B (93%)" in guessed
    unreliable = host_lines({**host, "os_fingerprint": ["OS:SCAN(G=N%P=x)"]}, guesses)
    assert unreliable[0].startswith("Warning: OSScan results may be unreliable")
