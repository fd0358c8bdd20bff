"""tests/ci_skips.py: in CI (CI=true) a skipped test fails with its reason, except a GPU test; elsewhere a skip
stays a skip. Each case is a real pytest run, in a child process, over a small generated test file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import ROOT

TESTS = '''
import pytest

pytestmark = pytest.mark.filterwarnings("ignore")


def test_needs_a_tool():
    pytest.skip("frobnicate is not installed (apt-get install frobnicate)")


@pytest.mark.skipif(True, reason="no engine answers")
def test_marked_skip():
    pass


@pytest.fixture
def service():
    pytest.skip("the service fixture found no socket")


def test_skips_in_a_fixture(service):
    pass


@pytest.mark.gpu
def test_on_a_gpu():
    pytest.skip("needs a CUDA GPU; none is visible")


@pytest.mark.multi_gpu
@pytest.mark.skip(reason="needs two CUDA GPUs; 0 visible")
def test_on_two_gpus():
    pass


@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_to_fail():
    assert False


def test_passes():
    pass
'''

MODULE_SKIP = '''
import pytest

pytest.skip("the whole module needs nix-instantiate", allow_module_level=True)


def test_never_collected():
    pass
'''


def run(folder: Path, ci: str | None, source: str = TESTS, **env: str) -> subprocess.CompletedProcess[str]:
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: a\n    multi_gpu: b\n")
    (folder / "test_generated.py").write_text(source)
    drop = ("CI", "PIPELINE_SKIPS_FAIL", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")
    full = {k: v for k, v in os.environ.items() if k not in drop}
    full.update(PYTHONPATH=str(ROOT / "tests"), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", **env)
    if ci is not None:
        full["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_skips", "-p", "no:cacheprovider", "-rA",
                           "-v", "test_generated.py"], cwd=folder, env=full, capture_output=True, text=True,
                          timeout=120)


def outcomes(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """test name -> PASSED, FAILED, ERROR, SKIPPED or XFAIL, from the -v progress lines."""
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith("test_generated.py::"):
            name, word = line.removeprefix("test_generated.py::").split()[:2]
            found[name] = word
    return found


def test_in_ci_a_skip_fails_with_its_reason_and_the_gpu_tests_still_skip(tmp_path):
    proc = run(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert outcomes(proc) == {
        "test_needs_a_tool": "FAILED",          # skipped in the test
        "test_marked_skip": "ERROR",            # skipped by its marker, in set-up
        "test_skips_in_a_fixture": "ERROR",     # skipped by a fixture, in set-up
        "test_on_a_gpu": "SKIPPED",
        "test_on_two_gpus": "SKIPPED",
        "test_expected_to_fail": "XFAIL",
        "test_passes": "PASSED",
    }, proc.stdout
    for reason in ("frobnicate is not installed (apt-get install frobnicate)", "no engine answers",
                   "the service fixture found no socket"):
        assert f"skipped in CI (CI=true), where only tests that need a GPU may skip: {reason}" in proc.stdout


def test_outside_ci_a_skip_is_a_skip(tmp_path):
    for ci in (None, "false", "1"):  # CI=true, as CI sets it, is the only switch
        proc = run(tmp_path, ci)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert set(outcomes(proc).values()) == {"SKIPPED", "XFAIL", "PASSED"}, proc.stdout
        assert "skipped in CI" not in proc.stdout


def test_pipeline_skips_fail_overrides_ci(tmp_path):
    kept = run(tmp_path, "true", PIPELINE_SKIPS_FAIL="0")
    assert kept.returncode == 0 and "skipped in CI" not in kept.stdout, kept.stdout + kept.stderr
    failed = run(tmp_path, None, PIPELINE_SKIPS_FAIL="1")
    assert failed.returncode == 1 and outcomes(failed)["test_needs_a_tool"] == "FAILED", failed.stdout


def test_in_ci_a_module_skipped_while_collected_fails(tmp_path):
    proc = run(tmp_path, "true", MODULE_SKIP)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "skipped in CI (CI=true), where only tests that need a GPU may skip: " \
           "the whole module needs nix-instantiate" in proc.stdout
    assert run(tmp_path, None, MODULE_SKIP).returncode == 5  # outside CI: no tests ran, none failed
