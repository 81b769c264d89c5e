"""A user's own script, taken from docs/scripts.md as written, runs three ways: from the
CLI (``--script ./mycheck.py``), from ``pn.scan(scripts=[...])``, and from a tiny installed
package whose entry point (group ``prtip_nb.scripts``) offers it by name. Also: a script
that raises leaves an error row, and bad selections fail before anything is sent."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import prtip_nb as pn

ROOT = Path(__file__).resolve().parents[2]
HOST, PORT = "127.0.0.1", 8080
CLI = "import sys; from prtip_nb.cli import main; sys.exit(main())"


def _example() -> str:
    text = (ROOT / "docs" / "scripts.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                 if b.startswith("# mycheck.py"))  # fmt: skip
    return block


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("X-Powered-By", "PHP/8.2.7")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _web() -> Iterator[None]:
    srv = http.server.ThreadingHTTPServer((HOST, PORT), _Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield
    finally:
        srv.shutdown()
        srv.server_close()


def _cli(args: list[str], cwd: Path, pythonpath: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, "-c", CLI, "scan", HOST, "-p", str(PORT), *args,
                           "-oX", str(cwd / "out.xml")], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_user_script_three_ways(netns: None, tmp_path: Path) -> None:
    (tmp_path / "mycheck.py").write_text(_example())
    # An installed package: its code, a dist-info with the entry point, on sys.path.
    site = tmp_path / "site"
    (site / "mychecks").mkdir(parents=True)
    (site / "mychecks" / "__init__.py").write_text(_example())
    info = site / "mychecks-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mychecks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[prtip_nb.scripts]\nmychecks = mychecks\n")
    want = "\n  value: PHP/8.2.7\n  status: 200"
    with _web():
        cli = _cli(["--script", "./mycheck.py"], tmp_path, str(ROOT))
        assert cli.returncode == 0, cli.stderr
        assert "| http-powered-by: \n|   value: PHP/8.2.7\n|_  status: 200" in cli.stdout
        assert 'id="http-powered-by"' in (tmp_path / "out.xml").read_text()

        spec = importlib.util.spec_from_file_location("mycheck", tmp_path / "mycheck.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        res = pn.scan(HOST, ports=str(PORT), scripts=[module.powered_by])
        rows = res.tables["scripts"].to_pylist()
        assert [(r["port"], r["id"], r["output"]) for r in rows] == [
            (PORT, "http-powered-by", want)]
        assert json.loads(rows[0]["data"]) == [["value", "PHP/8.2.7"], ["status", "200"]]
        assert {e["key"]: e["value"] for e in rows[0]["elements"]} == {
            "value": "PHP/8.2.7", "status": "200"}

        pkg = _cli(["--script", "http-powered-by and safe"], tmp_path,
                   f"{ROOT}{os.pathsep}{site}")  # fmt: skip
        assert pkg.returncode == 0, pkg.stderr
        assert "|_  status: 200" in pkg.stdout

        @pn.script("broken", categories=("safe",), ports=(PORT,))
        async def broken(ctx: pn.nse.Context) -> str:
            raise RuntimeError("boom")

        res = pn.scan(HOST, ports=str(PORT), scripts=[broken, "http-title"])
        rows = {r["id"]: r for r in res.tables["scripts"].to_pylist()}
        assert rows["broken"]["output"].startswith("ERROR: Script execution failed")
        assert "RuntimeError: boom" in rows["broken"]["data"]
        assert "http-title" in rows  # the others still ran


def test_bad_selections_fail_before_sending() -> None:
    for bad, words in [("nosuch", "no script or category named 'nosuch'"),
                       ("default and (safe", "not closed"),
                       ("./missing.py", "does not exist")]:  # fmt: skip
        with pytest.raises(pn.ConfigError, match=re.escape(words)):
            pn.Scan("198.51.100.1", ports="80", scripts=bad)


def test_selection_and_args() -> None:
    ids = lambda sel: [s.id for s in pn.nse.resolve(sel)]  # noqa: E731
    default = ids("default")
    assert "http-title" in default and "ssh-hostkey" in default and "banner" not in default
    assert ids("http-* and not (http-methods or http-favicon)") == [
        "http-title", "http-server-header", "http-headers", "http-robots.txt"]
    assert set(ids("default or discovery")) >= set(default) | {"banner", "redis-info"}
    assert ids("ssl-cert,ssh-hostkey") == ["ssl-cert", "ssh-hostkey"]
    assert pn.nse.parse_args('a=1,b={x,y},smtp.domain="q,r", flag') == {
        "a": "1", "b": "{x,y}", "smtp.domain": "q,r", "flag": ""}
    assert pn.nse.api.format_tree(pn.nse.api.to_tree({"k": "v", "t": ["a", "b"]})) == [
        "  k: v", "  t: ", "    a", "    b"]
