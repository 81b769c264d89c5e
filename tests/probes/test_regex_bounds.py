"""Regex bounds: the static guard, and every shipped rule timed on hostile input (< 50 ms)."""

from __future__ import annotations

import re
import time

import pytest

from prtip_nb.lab.hostile import CHUNK, REDOS_PAYLOAD
from prtip_nb.probes.regexguard import hostile_inputs, risk, worst_time
from prtip_nb.probes.servicedb import REGEX_WINDOW, default_db

LIMIT_S = 0.050


@pytest.mark.parametrize(
    "pattern",
    [rb"(a+)+b", rb"^(\w+\s?)*$", rb"(?:\r\n|.)*X", rb"(x|xy)*z", rb"^220 (\d+\w*) FTP",
     rb"^(\S+).*?SMTP", rb"Server: +([\d. ]+)x", rb"((ab)*)*c"],
)  # fmt: skip
def test_catastrophic_shapes_are_refused(pattern: bytes) -> None:
    assert risk(pattern, re.S) is not None


@pytest.mark.parametrize(
    "pattern",
    [rb"^SSH-([\d.]+)-OpenSSH_([\w.+-]+)", rb"(?:[^\r\n]*\r\n)*X", rb"(\d+\.)+\d+",
     rb"(?>a+)+b", rb"a*+b", rb"^HTTP/1\.[01] \d\d\d (?:(?!\r\n\r\n).){0,4000}?\r\nServer: x",
     rb"^\x30(?:[\x00-\x7f]|\x81.|\x82..)\x02"],
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
            assert risk(rule.regex.pattern, rule.regex.flags) is None, rule.source
            inputs = hostile_inputs(rule.regex.pattern, rule.regex.flags) + shared
            took = worst_time(rule.regex, inputs)
            slowest = max(slowest, (took, rule.source))
    assert slowest[0] < LIMIT_S, slowest


def test_whole_chains_stay_fast_on_the_redos_payload() -> None:
    db = default_db()
    for probe in db.probes:
        for data in _windows(REDOS_PAYLOAD):
            t0 = time.perf_counter()
            db.match(probe, data)
            assert time.perf_counter() - t0 < LIMIT_S, probe.name
