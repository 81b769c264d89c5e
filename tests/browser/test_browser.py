"""In a real browser: the quick-start notebook in JupyterLab, its scan panel, and the report.

What only a browser shows: the widgets and the live chart render, Start works from a click,
and the report's charts draw from the inlined plotly.js with no network. Screenshots go to
tests/artifacts/browser/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import prtip_nb as pn
from prtip_nb.lab import Lab

from .conftest import Guard, JupyterLab

KERNEL_READY = """() => { const a = window.jupyterapp; if (!a) return false;
    const w = a.shell.currentWidget; const sc = w && w.sessionContext;
    return !!(sc && sc.isReady && sc.session && sc.session.kernel &&
              sc.session.kernel.connectionStatus === 'connected' &&
              sc.session.kernel.status === 'idle'); }"""
CHART_POINTS = """() => { const g = document.querySelector('.prtip-live-chart.js-plotly-plot');
    return g && g.data ? g.data.map(t => (t.x || []).length) : null; }"""


def _text(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.text_content())


def test_quickstart_panel_in_jupyterlab(lab_server: JupyterLab, browser: Any,
                                        artifacts: Path) -> None:
    t0 = time.monotonic()
    page = browser.new_page(viewport={"width": 1300, "height": 1400})
    guard = Guard()
    page.route("**/*", guard)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(lab_server.page_url("01_quickstart.ipynb"), wait_until="domcontentloaded")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        # The status bar says Idle before the session is attached: wait for the real state.
        page.wait_for_function(KERNEL_READY, timeout=60_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

        # Run All ends with a scan started from code: the panel shows it completed.
        page.wait_for_selector(".prtip-panel .prtip-live-chart.js-plotly-plot", timeout=60_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.prtip-status')]"
            ".some(e => e.textContent.startsWith('completed'))", timeout=60_000)
        page.wait_for_function(KERNEL_READY, timeout=60_000)  # every cell has run
        out = page.locator(".jp-OutputArea-output", has_text="exactly the lab's").first
        listed = (out.text_content() or "").split("lab's:", 1)[1]
        lab_ports = {int(p) for p in re.findall(r"\d+", listed)}
        assert len(lab_ports) >= 20
        first_scan = _text(page, ".prtip-scan-id")

        # A person presses Start: a second scan, driven from the browser.
        page.locator("button.prtip-start").click()
        page.wait_for_function(
            "(old) => { const s = document.querySelector('.prtip-status');"
            " const id = document.querySelector('.prtip-scan-id');"
            " return s && id && id.textContent !== old && s.textContent.startsWith('completed'); }",
            arg=first_scan, timeout=30_000)
        page.wait_for_timeout(300)  # plotly's relayout after the last redraw

        width = page.evaluate(
            "() => document.querySelector('.prtip-progress .progress-bar').style.width")
        assert width == "100%", width
        assert _text(page, ".prtip-progress-text").startswith("100.0%")
        points = page.evaluate(CHART_POINTS)
        assert points and all(n > 0 for n in points), points
        # The live chart fills the panel's width (it was a fixed 700 px).
        widths = page.evaluate("""() => {
            const panel = document.querySelector('.prtip-panel').getBoundingClientRect();
            const svg = document.querySelector('.prtip-live-chart .main-svg')
                .getBoundingClientRect();
            return [svg.width, panel.width]; }""")
        assert widths[0] >= 0.9 * widths[1], widths
        rows = page.locator(".prtip-open-ports tr[data-port]")
        shown = {int(rows.nth(i).get_attribute("data-port")) for i in range(rows.count())}
        assert shown == lab_ports
        assert page.locator("text=Loading widget").count() == 0

        page.locator(".prtip-panel").first.screenshot(path=str(artifacts / "panel.png"))

        # A bad field is framed in red, its message on the one-line error row; the panel
        # below does not move.
        start_y = page.locator("button.prtip-start").first.bounding_box()["y"]
        page.locator(".prtip-input-ports input").first.fill("1-70000")
        page.wait_for_function("() => [...document.querySelectorAll('.prtip-form-errors')]"
                               ".some(e => e.textContent.includes('70000'))", timeout=10_000)
        border = page.evaluate("""() => getComputedStyle(
            document.querySelector('.prtip-input-ports.prtip-invalid input')).borderTopColor""")
        assert border == "rgb(214, 39, 40)", border
        assert page.locator("button.prtip-start").first.bounding_box()["y"] == start_y
        page.locator(".prtip-panel").first.screenshot(path=str(artifacts / "panel-bad-field.png"))
        page.screenshot(path=str(artifacts / "quickstart.png"), full_page=False)
    except Exception:
        page.screenshot(path=str(artifacts / "quickstart-failure.png"))
        raise
    finally:
        page.close()
    assert guard.blocked == [], guard.blocked
    assert not [e for e in errors if "prtip" in e.lower()], errors
    assert time.monotonic() - t0 < 90


def test_report_renders_its_charts_offline(browser: Any, artifacts: Path,
                                           tmp_path: Path) -> None:
    # Only the lab's ports (JupyterLab and its kernels listen on this loopback too), with
    # enough closed ones and a rate limit for the throughput chart to have a shape.
    with Lab.defaults(host="127.0.0.1", ephemeral=True, closed=3000) as lab:
        ports = ",".join(map(str, lab.open_ports["tcp"] + lab.closed_ports))
        res = pn.scan("127.0.0.1", ports=ports, method="connect", rate=3000)
    path = pn.report(res, tmp_path / "report.html")
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    guard = Guard(allow_files=True)
    page.route("**/*", guard)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(path.as_uri(), wait_until="load")
        page.wait_for_function(
            "() => document.querySelectorAll('.chart .js-plotly-plot .main-svg').length >= 5",
            timeout=30_000)
        drawn = page.evaluate("""() => [...document.querySelectorAll('.chart')].map(c => ({
            name: c.dataset.chart,
            traces: (c.querySelector('.js-plotly-plot').data || []).length,
            marks: c.querySelectorAll('.trace, .hm, .heatmaplayer image, .point').length }))""")
        # A tall viewport rather than full_page=True, which took 25 s here (every responsive
        # chart relayouts while chromium stitches the page).
        height = page.evaluate("() => document.documentElement.scrollHeight")
        page.set_viewport_size({"width": 1300, "height": min(int(height), 6000)})
        page.wait_for_timeout(300)
        page.screenshot(path=str(artifacts / "report.png"))
    finally:
        page.close()
    names = {d["name"] for d in drawn}
    # No services chart: the lab's kernel-picked ports have no name, even as a guess.
    assert {"ports", "states", "throughput", "memory", "rtt"} <= names
    assert all(d["traces"] > 0 and d["marks"] > 0 for d in drawn), drawn
    assert guard.blocked == [], guard.blocked  # it opened with no network at all
    assert errors == []
