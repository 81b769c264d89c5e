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
