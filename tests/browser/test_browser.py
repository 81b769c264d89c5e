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

import pytest

import prtip_nb as pn
from prtip_nb.lab import Lab

from .conftest import Guard, JupyterLab

# One worker runs the module: its JupyterLab server and chromium (module fixtures, ~5 s of
# both cores to start) start once, not on every worker that picks up one of its tests.
pytestmark = pytest.mark.xdist_group("browser")

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
        out = page.locator(".jp-OutputArea-output", has_text="exactly the expected ones").first
        listed = (out.text_content() or "").split("expected ones:", 1)[1]
        lab_ports = {int(p) for p in re.findall(r"'127\.0\.0\.1', (\d+)", listed)}
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
        charts = page.locator(".chart")
        for i in range(charts.count()):  # each chart on its own, for review
            chart = charts.nth(i)
            name = chart.get_attribute("data-chart")
            chart.screenshot(path=str(artifacts / f"report-{name}.png"))
    finally:
        page.close()
    names = {d["name"] for d in drawn}
    # No services chart: the lab's kernel-picked ports have no name, even as a guess.
    assert {"ports", "states", "throughput", "memory", "rtt"} <= names
    assert all(d["traces"] > 0 and d["marks"] > 0 for d in drawn), drawn
    assert guard.blocked == [], guard.blocked  # it opened with no network at all
    assert errors == []


PACE_RATE = 3000
PACING_NB = f"""
import prtip_nb as pn
from prtip_nb.lab import Lab
lab = Lab.defaults(host="127.0.0.1", ephemeral=True, closed=4500).start()
PORTS = ",".join(map(str, lab.open_ports["tcp"] + lab.closed_ports))
# Pressed in the browser: {PACE_RATE:,}/s typed in the rate field, sampled every 50 ms.
paced = pn.ScanPanel(targets="127.0.0.1", ports=PORTS, rate="{PACE_RATE}",
                     telemetry_interval=0.05)
display(paced)
_ = paced.chart  # one panel's chart at a time (see the report: two at once raced)
# Run from code: the same ports through two worker processes.
tree = pn.ScanPanel(targets="127.0.0.1", ports=PORTS, rate="{PACE_RATE}", workers=2,
                    telemetry_interval=0.05)
display(tree)
tree.start(); tree.wait(); tree.chart
"""
# Records every text the first panel's progress line shows, with the browser's clock.
# The page also holds the quick-start notebook's (hidden) panel: every query is scoped to
# the pacing notebook's node.
HERE = "window.jupyterapp.shell.currentWidget.node"
WATCH_PROGRESS = f"""() => {{ window.prtipLines = [];
    const el = {HERE}.querySelectorAll('.prtip-panel')[0]
        .querySelector('.prtip-progress-text');
    new MutationObserver(() => window.prtipLines.push([performance.now(), el.textContent]))
        .observe(el, {{subtree: true, childList: true, characterData: true}}); }}"""
CHART_DATA = f"""(i) => {{ const g = {HERE}.querySelectorAll('.prtip-panel')[i]
        .querySelector('.prtip-live-chart.js-plotly-plot');
    return g.data.map(t => ({{x: Array.from(t.x || []), y: Array.from(t.y || []),
                             c: Array.from(t.customdata || [])}})); }}"""
_ETA = re.compile(r"^([\d.]+)% .* ETA ([\d.,]+) (ms|s)")


@pytest.mark.serial
def test_panel_paces_measures_its_workers_and_predicts_the_end(
        lab_server: JupyterLab, browser: Any, artifacts: Path) -> None:
    """A rate of 3,000/s pressed in the browser: sends from the first 100 ms on with no
    100 ms gap and no burst; the ETA line from 10% on is within 30% of the real end; the
    memory chart of a scan with worker processes includes theirs."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3",
                             "language": "python"}}  # or lab asks which kernel
    nbformat.write(new_notebook(cells=[new_code_cell(PACING_NB)], metadata=kernel),
                   lab_server.root / "pacing.ipynb")
    page = browser.new_page(viewport={"width": 1300, "height": 1600})
    guard = Guard()
    page.route("**/*", guard)
    try:
        page.goto(lab_server.page_url("pacing.ipynb"), wait_until="domcontentloaded")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        # Lab also restores the quick-start tab of the test before: run all cells of this
        # notebook, once it is the current one and its kernel is ready.
        page.wait_for_function(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return !!(w && w.context && w.context.path === 'pacing.ipynb'); }",
            timeout=60_000)
        page.wait_for_function(KERNEL_READY, timeout=60_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(
            f"() => {{ const s = {HERE}.querySelectorAll('.prtip-status');"
            " return s.length == 2 && s[1].textContent.startsWith('completed'); }",
            timeout=60_000)
        page.wait_for_function(KERNEL_READY, timeout=60_000)

        page.evaluate(WATCH_PROGRESS)
        started = page.evaluate("() => performance.now()")
        scope = page.locator(".jp-NotebookPanel", has_text="tree.start()")
        scope.locator("button.prtip-start").first.click()
        page.wait_for_function(f"() => {HERE}.querySelector('.prtip-status')"
                               ".textContent.startsWith('completed')", timeout=30_000)
        ended = page.evaluate("() => performance.now()")
        lines = page.evaluate("() => window.prtipLines")
        page.wait_for_timeout(300)  # plotly's relayout after the last redraw
        paced, tree = page.evaluate(CHART_DATA, 0), page.evaluate(CHART_DATA, 1)
        scope.locator(".prtip-panel").nth(0).screenshot(path=str(artifacts / "panel-paced.png"))
        scope.locator(".prtip-panel").nth(1).screenshot(
            path=str(artifacts / "panel-workers.png"))
    except Exception:
        page.screenshot(path=str(artifacts / "pacing-failure.png"))
        raise
    finally:
        page.close()
    assert guard.blocked == [], guard.blocked

    # Pacing: the chart's points (one per 50 ms sample) from the first on.
    t, pps = paced[0]["x"], paced[0]["y"]
    if t[0] < 0.05:  # the poller's sample at the start may come before the first send
        t, pps = t[1:], pps[1:]
    assert t[0] <= 0.15 and pps[0] > 0, (t[:3], pps[:3])
    assert all(y > 0 for y in pps[:-1]), list(zip(t, pps, strict=True))  # no 50 ms without
    first_second = sum(y * (b - a) for a, b, y in zip([0.0, *t], t, pps, strict=False)
                       if b <= 1.0) / max(b for b in t if b <= 1.0)
    assert 0.8 * PACE_RATE <= first_second <= 1.15 * PACE_RATE, first_second
    assert max(pps) <= 2.0 * PACE_RATE, max(pps)  # it was 8,900/s at a 3,000/s limit

    # ETA: every estimate shown from 10% on, against the end the browser saw.
    real = (ended - started) / 1000
    off = []
    for at, text in lines:
        m = _ETA.match(text)
        if m and float(m[1]) >= 10:
            eta = float(m[2].replace(",", "")) / (1000 if m[3] == "ms" else 1)
            off.append(abs((at - started) / 1000 + eta - real) / real)
    assert off, lines
    assert max(off) <= 0.30, (real, lines)

    # The process tree: two workers (Python + numpy, ~30 MiB each) on top of the kernel,
    # whose own memory the in-process scan's chart shows; CPU in the hover.
    assert max(tree[2]["y"]) >= max(paced[2]["y"]) + 30, (tree[2]["y"], paced[2]["y"])
    assert tree[2]["c"] and min(tree[2]["c"]) >= 0
