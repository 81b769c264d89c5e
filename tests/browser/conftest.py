"""JupyterLab on 127.0.0.1 and Debian's chromium, driven by Playwright, for tests/browser.

Network safety: JupyterLab binds 127.0.0.1 only; chromium resolves no name but
127.0.0.1 (``--host-resolver-rules``), and every request that is not to 127.0.0.1 (or a
local file, for the report) is aborted and recorded, so a test can assert there were none.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..conftest import need

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
LOCAL = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:", "about:")


@dataclass
class JupyterLab:
    url: str
    token: str
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def page_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"


@dataclass
class Guard:
    """Aborts every request that leaves the machine; remembers what it blocked."""

    blocked: list[str] = field(default_factory=list)
    allow_files: bool = False

    def __call__(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(LOCAL) or (self.allow_files and url.startswith("file://")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # 127.0.0.1 only
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"jupyter lab did not answer in {timeout} s: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    need(os.path.exists(CHROMIUM), "needs Debian's chromium (apt-get install chromium)")
    need(importlib.util.find_spec("jupyterlab") is not None, "needs jupyterlab (pip)")
    need(importlib.util.find_spec("playwright") is not None, "needs playwright (pip)")
    base = tmp_path_factory.mktemp("jupyterlab")
    root, config = base / "root", base / "config"
    (config / "labconfig").mkdir(parents=True)
    root.mkdir()
    # The news pop-up would cover the screenshots.
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    shutil.copy(REPO / "notebooks" / "01_quickstart.ipynb", root)
    port, token = _free_port(), "prtip-browser-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
           "PRTIP_NB_DATA": str(root / "scans")}
    log = base / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
             f"--port={port}", "--allow-root", f"--ServerApp.token={token}",
             f"--ServerApp.root_dir={root}", "--expose-app-in-browser",
             f"--LabApp.workspaces_dir={base / 'workspaces'}", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{url}/api/status?token={token}", proc, log)
        yield JupyterLab(url, token, root, proc, log)
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def browser(lab_server: JupyterLab) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
