"""pn.report(new, path, previous=old): the "What changed" section, read from the sample
data's four scans (data/sample/README.md tells what changed between them). Files only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import prtip_nb as pn
from prtip_nb._report_changes import change_facts, expiring_certificates

SCANS = Path(__file__).resolve().parents[1] / "data" / "sample" / "scans"


def _series() -> list[pn.ScanResult]:
    listing = pn.list_scans(SCANS).sort_values("started")
    return [pn.read_scans(SCANS, scan_id=i) for i in listing["scan_id"]]


def test_the_changes_a_person_acts_on_in_sentences_and_tables(tmp_path: Path) -> None:
    s = _series()
    lines, rows, _certs = change_facts(s[2], s[1])
    assert "1 new host: 203.0.113.5." in lines
    assert "1 service changed (product, version or CPE)." in lines  # 8080: tcpwrapped -> http
    lines, rows, _certs = change_facts(s[1], s[0])
    assert "1 port opened and 1 port closed on hosts seen both times." in lines
    assert set(rows["change"].astype(str)) == {"opened", "closed"}
    same, rows, _ = change_facts(s[1], s[1])
    assert same[1].startswith("Nothing changed") and not len(rows)
    html = pn.report(s[2], tmp_path / "r.html", previous=s[1]).read_text()
    assert html.index("What changed since the last scan") < html.index("<h2>Hosts</h2>")
    assert "<h3>New hosts (2)</h3>" in html and "<h3>Services changed (1)</h3>" in html
    assert "What changed" not in pn.report(s[2], tmp_path / "one.html").read_text()


def test_certificates_expired_or_expiring_soon() -> None:
    last = _series()[-1]
    ends = last.open_ports["tls_not_after"].dropna()
    assert len(ends) == 3  # the lab's https on three hosts
    # The sample's certificates: two valid for 90 days, 203.0.113.5's for 10 (made once, with
    # the scans: data/sample/README.md), so "now" is set from the data, not the clock.
    end = ends.min().to_pydatetime()
    assert len(expiring_certificates(last, now=end - timedelta(days=400))) == 0
    soon = expiring_certificates(last, now=end - timedelta(days=10))
    assert list(soon["host"].astype(str)) == ["203.0.113.5"] and (soon["days_left"] >= 0).all()
    assert len(expiring_certificates(last, now=ends.max().to_pydatetime() - timedelta(days=5))) == 3
    late = expiring_certificates(last, now=datetime(2100, 1, 1, tzinfo=UTC))
    assert len(late) == 3 and (late["days_left"] < 0).all()
    lines, _rows, _certs = change_facts(last, _series()[-2], now=datetime(2100, 1, 1, tzinfo=UTC))
    assert "3 certificates expired or expiring within 30 days (3 already expired)." in lines
