"""Regex bounds: the static guard, and every shipped rule timed on hostile input (< 50 ms)."""

from __future__ import annotations

import re
import time

import pytest

from prtip_nb.lab.hostile import CHUNK, REDOS_PAYLOAD
from prtip_nb.service.regexguard import hostile_inputs, risk, worst_time
from prtip_nb.service.servicedb import REGEX_WINDOW, default_db, re_flags

LIMIT_S = 0.050


@pytest.mark.parametrize(
    "pattern",
    [rb"(a+)+b", rb"^(\w+\s?)*$", rb"(?:\r\n|.)*X", rb"(x|xy)*z", rb"^220 (\d+\w*) FTP",
     rb"^(\S+).*?SMTP", rb"Server: +([\d. ]+)x", rb"((ab)*)*c", rb"(a{1,8}){1,8}$",
     rb"((a{1,2}){1,4}){1,4}", rb"(?:[a-z]{1,4} ?){1,5}\r\n"],
)  # fmt: skip
def test_catastrophic_shapes_are_refused(pattern: bytes) -> None:
    assert risk(pattern, re.S) is not None


def test_nested_small_repeats_are_refused_because_they_are_slow() -> None:
    # What the guard prevents: re has no timeout, and this takes seconds at 64 a's.
    assert "small repeats" in (risk(rb"(a{1,8}){1,8}$") or "")
    t0 = time.thread_time()
    re.search(rb"(a{1,8}){1,8}$", b"a" * 22 + b"!")
    assert time.thread_time() - t0 > 0.005  # measured: 16 a's 3 ms, 22 a's 38 ms, 26 a's 144 ms


@pytest.mark.parametrize(
    "pattern",
    [rb"^SSH-([\d.]+)-OpenSSH_([\w.+-]+)", rb"(?:[^\r\n]*\r\n)*X", rb"(\d+\.)+\d+",
     rb"(?>a+)+b", rb"a*+b", rb"^HTTP/1\.[01] \d\d\d (?:(?!\r\n\r\n).){0,4000}?\r\nServer: x",
     rb"^\x30(?:[\x00-\x7f]|\x81.|\x82..)\x02", rb"(a{1,2}){1,8}", rb"(\d{1,3}\.){3}\d{1,3}"],
)  # fmt: skip
def test_safe_shapes_pass(pattern: bytes) -> None:
    assert risk(pattern, re.S) is None


def _windows(data: bytes) -> list[bytes]:
    return [data[i : i + REGEX_WINDOW] for i in range(0, len(data), REGEX_WINDOW // 2)]


def test_every_shipped_rule_is_fast_on_hostile_input() -> None:
    db = default_db()
    shared = _windows(REDOS_PAYLOAD) + [CHUNK[:REGEX_WINDOW]]
    slowest = (0.0, "")
    for probe in db.probes:
        for rule in probe.rules:
            assert risk(rule.regex.pattern, re_flags(rule.regex)) is None, rule.source
            inputs = hostile_inputs(rule.regex.pattern, re_flags(rule.regex)) + shared
            took = worst_time(rule.regex, inputs)
            slowest = max(slowest, (took, rule.source))
    assert slowest[0] < LIMIT_S, slowest


@pytest.mark.serial
def test_whole_chains_stay_fast_on_the_redos_payload() -> None:
    db = default_db()
    for probe in db.probes:
        for data in _windows(REDOS_PAYLOAD):
            t0 = time.perf_counter()
            db.match(probe, data)
            assert time.perf_counter() - t0 < LIMIT_S, probe.name
