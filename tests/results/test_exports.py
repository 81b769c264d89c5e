"""prtip_nb.results exports exactly its documented names, sorted."""

from __future__ import annotations

import prtip_nb.results as results


def test_all_is_sorted_and_resolves() -> None:
    assert results.__all__ == sorted(results.__all__)
    assert set(results.__all__) == {
        "ResultBuilder", "ScanMeta", "ScanResult", "list_scans", "new_scan_id", "read_scans",
        "schema",
    }  # fmt: skip
    for name in results.__all__:
        assert getattr(results, name) is not None, name


def test_new_scan_id_sorts_by_time() -> None:
    a = results.new_scan_id()
    assert len(a) == len("20261128T101500Z-ab12cd") and a[8] == "T" and a[15:17] == "Z-"
    assert a[:16] <= results.new_scan_id()[:16]
