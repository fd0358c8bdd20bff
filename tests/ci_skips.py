"""In CI (the environment variable CI=true) a skipped test fails, with its skip reason, unless it needs a GPU.

A test skips where its machine lacks something (a tool, a service, a file), and its reason says what. On a
developer's machine that is the right answer; in CI it would hide a lost install step behind a green run. So
there the skip of a test is reported as a failure ("skipped in CI ...: nix-instantiate is not installed ...")
and the run fails. Tests marked `gpu` or `multi_gpu` still skip: CI has no GPU. An expected failure (xfail)
stays what it is, and a skip while collecting a module fails its collection the same way.

PIPELINE_SKIPS_FAIL=0 keeps skips skips under CI=true (GitHub's runners set CI=true, and .github/workflows runs
the suite there as a user who cannot mount a tmpfs); PIPELINE_SKIPS_FAIL=1 makes them fail anywhere.

Registered by tests/conftest.py; on its own: `pytest -p ci_skips` with tests/ on the import path.
"""

from __future__ import annotations

import os

import pytest

#: markers of the tests that may skip in CI: they need GPUs, and CI has none
GPU_MARKERS = ("gpu", "multi_gpu")


def in_ci() -> bool:
    """Whether a skip fails here: PIPELINE_SKIPS_FAIL=1 or 0 where set, else CI=true."""
    chosen = os.environ.get("PIPELINE_SKIPS_FAIL")
    return chosen == "1" if chosen in ("0", "1") else os.environ.get("CI") == "true"


def reason_of(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The skip's reason as the user wrote it (pytest keeps it as (file, line, "Skipped: reason"))."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def failure(reason: str) -> str:
    why = "PIPELINE_SKIPS_FAIL=1" if os.environ.get("PIPELINE_SKIPS_FAIL") == "1" else "CI=true"
    return f"skipped in CI ({why}), where only tests that need a GPU may skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    if any(item.get_closest_marker(name) for name in GPU_MARKERS):
        return
    report.longrepr = failure(reason_of(report))
    report.outcome = "failed"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and in_ci():
        report.longrepr = failure(reason_of(report))
        report.outcome = "failed"
