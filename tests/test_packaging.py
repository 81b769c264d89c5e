"""pyproject.toml and environment.yml name the same dependencies; the Makefile targets exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_environment_yml_matches_pyproject() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in meta["dependencies"]}
    for extra in ("nb", "dev"):
        wanted |= {_name(r) for r in meta["optional-dependencies"][extra]}
    env = (ROOT / "environment.yml").read_text()
    deps = env.split("dependencies:", 1)[1]
    listed = {
        _name(line.strip()[2:])
        for line in deps.splitlines()
        if line.strip().startswith("- ") and not line.strip().startswith(("- pip", "- -e"))
    }
    listed.discard("python")
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; " \
        f"only in pyproject.toml: {wanted - listed}"


def test_readme_commands_and_ci() -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^\s*make demo", readme, re.M)
    assert re.search(r"^\s*make test", readme, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo:", "test:", "bench:"):
        assert target in makefile


def _third_party_imports(paths: list[Path]) -> set[str]:
    import ast
    import sys

    found: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text())
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                    and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError"
                            for h in t.handlers)
                    for n in ast.walk(t)}  # `try: import duckdb / except ImportError`
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {n.split(".")[0] for n in names}
    return {n for n in found if n not in sys.stdlib_module_names and n != "prtip_nb"}


def test_charts_report_and_panel_need_only_the_core_install() -> None:
    """`make demo` installs the core only: everything the report, charts and panel import
    must be a core dependency, so a fresh machine's report has charts (issue 19)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in meta["dependencies"]}
    pkg = ROOT / "prtip_nb"
    paths = [pkg / "reporting.py", pkg / "demo.py", *(pkg / "viz").glob("*.py"),
             *(pkg / "widgets").glob("*.py")]
    needed = _third_party_imports(paths)
    assert {"plotly", "ipywidgets"} <= needed
    assert needed <= core, f"imported but not core dependencies: {needed - core}"
    # plotly's FigureWidget (the panel's live chart) is an anywidget since plotly 6.
    assert "anywidget" in core
    assert {_name(r) for r in meta["optional-dependencies"]["nb"]} == {"ipykernel"}
