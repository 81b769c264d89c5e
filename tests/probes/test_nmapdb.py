"""Reading nmap's probe file at run time: PCRE translation, skips with reasons, bounds.

The synthetic file below is written for this test in nmap's syntax; nmap's own file is
read only from the installed package (never copied into the project).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prtip_nb.service.matcher import RULE_TIMEOUT_S
from prtip_nb.service.nmapdb import (
    DEFAULT_PATH,
    Untranslatable,
    load_nmap_service_probes,
    translate_pcre,
)
from prtip_nb.service.regexguard import hostile_inputs
from prtip_nb.service.servicedb import re_flags

from ..conftest import need


@pytest.mark.parametrize(
    ("pcre", "python"),
    [
        (r"(?<ver>\d+)\k<ver>", r"(?P<ver>\d+)(?P=ver)"),
        (r"end\z", r"end\Z"),
        (r"end\Z", r"end(?=\n?\Z)"),
        (r"a\hb[\h-]", r"a[ \t]b[ \t-]"),
        (r"[[:alpha:][:digit:]_]+", r"[a-zA-Z0-9_]+"),
        (r"\x{41}\Q.*\E", r"\x41\.\*"),
        (r"\e\cA", r"\x1b\x01"),
        (r"[]a]", r"[\]a]"),
        (r"(?<=x)(?<!y)", r"(?<=x)(?<!y)"),
        (r"(?i)^abc", r"(?i)^abc"),
        (r"a++(?>b)", r"a++(?>b)"),
    ],
)
def test_translation(pcre: str, python: str) -> None:
    assert translate_pcre(pcre) == python
    re.compile(python.encode("latin-1"))


@pytest.mark.parametrize("pcre", [r"a\Kb", r"\x{263a}", r"a(?i)b", r"[[:^alpha:]]", r"[abc"])
def test_untranslatable(pcre: str) -> None:
    with pytest.raises(Untranslatable):
        translate_pcre(pcre)


SYNTHETIC = r"""
# written for this test, in nmap-service-probes syntax
Exclude T:9100-9101
Probe TCP NULL q||
totalwaitms 6000
match ssh m|^SSH-([\d.]+)-Example_(\S+)\r\n| p/Example sshd/ v/$2/ i/protocol $1/ cpe:/a:x:y/
match ftp m=^220 Hello (\w+)=i p|Hello ftpd| v|$1|
softmatch smtp m|^220 [^\r\n]*SMTP|
match bad m|^(a+)+$| p/Backtracking/
match bad2 m|^x\Ky| p/Keep-out/
Probe TCP Hello q|HELLO\r\n|
rarity 3
ports 7000-7002
sslports 7443
fallback NULL
match hello m|^HI (\d+)\0| p/Hello server/ v/$1/
Probe UDP Skipped q|x|
match udp m|^x|
"""


def test_a_synthetic_file_loads_with_its_skips(tmp_path: Path) -> None:
    path = tmp_path / "probes"
    path.write_text(SYNTHETIC)
    db = load_nmap_service_probes(path)
    assert [p.name for p in db.probes] == ["NULL", "Hello", "TLSHandshake"]
    assert db.exclude == {9100, 9101}
    hello = db.by_name["Hello"]
    assert (hello.payload, hello.rarity, 7001 in hello.ports) == (b"HELLO\r\n", 3, True)
    assert db.by_name["TLSHandshake"].ports == {7443}
    m = db.match(db.null, b"SSH-2.0-Example_1.2\r\n")
    assert m is not None and (m.product, m.version, m.info) == ("Example sshd", "1.2",
                                                                  "protocol 2.0")  # fmt: skip
    m = db.match(db.null, b"220 HELLO abc")
    assert m is not None and (m.service, m.version) == ("ftp", "abc")  # the i flag
    m = db.match(hello, b"HI 42\x00")
    assert m is not None and m.product == "Hello server"
    m = db.match(hello, b"220 x SMTP ready")  # NULL's rules apply to every probe's reply
    assert m is not None and m.soft and m.service == "smtp"
    reasons = {s.where.split(":")[1]: s.reason for s in db.skipped}
    assert "nested quantifier" in reasons["9"] and "\\K" in reasons["10"]
    strict = load_nmap_service_probes(path, measure=1e-12)  # nothing is that fast
    static = {x.where for x in db.skipped}
    assert len(strict) == 0 and all("slow on hostile input" in x.reason
                                    for x in strict.skipped if x.where not in static)


@pytest.fixture(scope="module")
def nmap_db() -> object:
    need(os.path.exists(DEFAULT_PATH), "needs nmap's data files (apt-get install nmap)")
    # The default: static guards only (the next test shows the timeout bounds the rest).
    return load_nmap_service_probes()


def test_installed_nmap_database(nmap_db: object) -> None:
    from prtip_nb.service.servicedb import ServiceDB

    assert isinstance(nmap_db, ServiceDB)
    assert len(nmap_db) > 10_000 and len(nmap_db.probes) > 50
    assert 0 < len(nmap_db.skipped) < 0.02 * len(nmap_db)
    assert all(s.reason and s.where.startswith("nmap-service-probes:") for s in nmap_db.skipped)
    m = nmap_db.match(nmap_db.null, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    assert m is not None and m.service == "ssh" and m.product == "OpenSSH"
    get = nmap_db.by_name["GetRequest"]
    m = nmap_db.match(get, b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n")
    assert m is not None and (m.service, m.product, m.version) == ("http", "nginx", "1.22.1")


def test_every_nmap_rule_stops_at_its_timeout_on_hostile_input(nmap_db: object) -> None:
    """The bound is the per-search timeout, whatever the static guard let through: run as
    the matcher runs them, no rule holds a thread much past ``RULE_TIMEOUT_S``."""
    from prtip_nb.service.servicedb import ServiceDB

    assert isinstance(nmap_db, ServiceDB)
    slowest = (0.0, "")
    for probe in nmap_db.probes:
        for rule in probe.rules:
            compiled = rule.regex.compile()  # every rule compiles (lazily, in a scan)
            for data in hostile_inputs(rule.regex.pattern, re_flags(rule.regex)):
                t0 = time.thread_time()
                with contextlib.suppress(TimeoutError):
                    compiled.search(data, partial=True, timeout=RULE_TIMEOUT_S)
                slowest = max(slowest, (time.thread_time() - t0, rule.source))
    assert slowest[0] < RULE_TIMEOUT_S + 0.010, slowest


MALFORMED = r"""
Probe TCP NULL q||
match ok m|^OK| p/Fine/
match loop m|^(?<a>x)\k<a| p/Unterminated backreference/
match cut m|^x| p
match short
Probe TCP
Probe TCP Bad q
rarity many
ports 80-70
match after m|^AFTER| p/Still read/
"""


def test_malformed_lines_are_skipped_with_a_warning_naming_each(tmp_path: Path) -> None:
    r"""One malformed line used to abort the load (IndexError), and ``\k<a`` without its
    ``>`` looped until MemoryError; now each is skipped, named, and the rest loads."""
    path = tmp_path / "probes"
    long_line = "match long m|" + "a" * 70_000 + "|\n"
    path.write_text(MALFORMED + long_line + "match tail m|^TAIL|\n")
    with pytest.warns(UserWarning) as caught:
        db = load_nmap_service_probes(path, measure=None)
    lines = {int(str(w.message).split("line ")[1].split(":")[0]) for w in caught}
    assert lines == {5, 6, 7, 8, 9, 10, 12}  # each malformed line, by number
    assert all(str(path) in str(w.message) for w in caught)
    reasons = {s.where.split(":")[1]: s.reason for s in db.skipped}
    assert "unterminated \\k<name>" in reasons["4"]  # untranslatable: skipped, no warning
    null = db.null
    for reply, product in ((b"OK", "Fine"), (b"AFTER", "Still read")):
        m = db.match(null, reply)
        assert m is not None and m.product == product
    assert db.match(null, b"TAIL") is not None  # read on past the 70 KB line


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.sampled_from(SYNTHETIC.splitlines() + MALFORMED.splitlines()),
                      max_size=12),
       cut=st.integers(0, 80), junk=st.text(alphabet="|\\<>(){}[]kQEx:mp/ ", max_size=20))
def test_a_mutated_probe_file_always_loads(lines: list[str], cut: int, junk: str) -> None:
    """Real lines, reordered, cut short and with junk appended: the load never raises."""
    import tempfile
    import warnings

    mutated = [line[: cut or None] + junk if i % 2 else line for i, line in enumerate(lines)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probes"
        path.write_text("\n".join(mutated) + "\n", encoding="latin-1", errors="replace")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            db = load_nmap_service_probes(path, measure=None)
    assert db.probes[-1].name == "TLSHandshake"


def test_a_reply_read_in_small_pieces_is_not_rematched_whole(nmap_db: object) -> None:
    """64 reads of 64 bytes: the incremental matcher against matching the whole window
    with the whole chain at each read (as nmap does). Measured: 50 ms against 500 ms."""
    from prtip_nb.service.matcher import ReplyMatcher
    from prtip_nb.service.servicedb import ServiceDB

    assert isinstance(nmap_db, ServiceDB)
    get = nmap_db.by_name["GetRequest"]
    reply = (b"HTTP/1.1 200 OK\r\nDate: Fri, 04 Dec 2026 17:00:00 GMT\r\nContent-Type: text/html"
             b"\r\n\r\n<html><head><title>Unknown device</title></head>"
             + b"<p>lorem ipsum dolor sit amet.</p>\n" * 120)[:4096]  # fmt: skip
    ReplyMatcher(get).feed(reply)  # compile what this reply meets (lazily compiled rules)
    reads = range(64, 4096 + 64, 64)
    t0 = time.thread_time()
    incremental = ReplyMatcher(get)
    answers = [incremental.feed(reply[:end]) for end in reads]
    took = time.thread_time() - t0
    t0 = time.thread_time()
    whole = [ReplyMatcher(get).feed(reply[:end]) for end in reads]
    rematch = time.thread_time() - t0
    assert answers == whole  # the same answer at every read
    assert took < 0.3 * rematch, (took, rematch)
