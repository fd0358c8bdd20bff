"""Sessions named for what a user types: `nox -s smoke`, `nox -s tests`, `nox -s train`, ...

Every session runs in ONE environment built from requirements.lock (exact versions) in .nox/locked and
rebuilt only when the lock changes: axolotl's stack is 4 GB, and one copy per session would cost minutes
and gigabytes for nothing. Sessions are thin: they make sure that environment exists, then call the
`pipeline` CLI or pytest with `session.posargs`, so `nox -s smoke -- configs/x.yaml` works.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
LOCK = ROOT / "requirements.lock"
ENV = Path(os.environ.get("PIPELINE_NOX_ENV", ROOT / ".nox" / "locked"))
BIN = ENV / "bin"

#: What `nox -s lint` runs ruff over: the product, its tests, benchmarks, tools and this file (not the research record in docs/research/). ruff
#: finds only *.py files in a folder, so a Python script without the suffix (a shebang naming python) is listed
#: on its own. tests/hygiene/test_ci_lint.py fails for a tracked Python file that none of these covers.
RUFF_PATHS = ["pipeline", "tests", "noxfile.py", "benchmarks", "tools", "tools/compare-smoke"]

nox.options.sessions = ["smoke", "tests"]
nox.options.default_venv_backend = "none"


def locked(session: nox.Session) -> dict[str, str]:
    """Create or update the locked environment; return the environment variables that use it."""
    stamp = ENV / ".lock-sha256"
    digest = hashlib.sha256(LOCK.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not (stamp.is_file() and stamp.read_text().strip() == digest):
        session.log(f"building the locked environment in {ENV} (once per change of requirements.lock)")
        if not (BIN / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
        # pip compiles every module it installs on one core (44,000 files here); compileall does the same
        # on all cores afterwards. Like pip, it skips what does not compile (torch ships 3.12-only files).
        session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "--no-compile", "-r", str(LOCK),
                    external=True)
        session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "--no-compile", "--no-deps",
                    "--no-build-isolation", "-e", str(ROOT), external=True)
        session.run(str(BIN / "python"), "-m", "compileall", "-qq", "-j", "0", str(ENV / "lib"), external=True,
                    success_codes=[0, 1])
        stamp.write_text(digest + "\n")
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(ENV),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
    }


def pipeline(session: nox.Session, *args: str) -> None:
    session.run(str(BIN / "pipeline"), *args, env=locked(session), external=True)


@nox.session
def env(session: nox.Session) -> None:
    """Build (or update) the locked environment in .nox/locked and nothing else: the step every other
    session starts with, on its own (CI builds it once, then runs lint beside the image build)."""
    locked(session)


@nox.session
def smoke(session: nox.Session) -> None:
    """3-step smoke of the real configs on a GPU, else of the tiny CPU config; prints the table."""
    pipeline(session, "smoke", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests on all cores, the long ones too with PIPELINE_TESTS=all (as CI runs them)."""
    env = locked(session)
    # the long tests (real SmolLM2, interrupted and resumed training) run where asked for, and in CI
    select = [] if os.environ.get("PIPELINE_TESTS") == "all" or "-m" in session.posargs else ["-m", "not long"]
    # tests spread one by one over the workers (shared runs are made once, behind a lock), but a module
    # marked xdist_group keeps its tests, and its module-scoped runs, on one worker
    session.run(str(BIN / "python"), "-m", "pytest", "-n", os.environ.get("PYTEST_WORKERS", "auto"),
                "--dist", "loadgroup", *select, *session.posargs, env=env, external=True)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Long fuzzing of every reader of a user's input (tests/fuzz): 100,000 examples a property (set
    PIPELINE_FUZZ_EXAMPLES to change it), a random seed, and each failure kept in .cache/hypothesis and
    replayed first next time. `nox -s tests` runs the same properties with a fixed seed and a few thousand
    examples in all."""
    env = locked(session)
    session.run(str(BIN / "python"), "-m", "pytest", "tests/fuzz", "-n", os.environ.get("PYTEST_WORKERS", "auto"),
                *session.posargs, env={**env, "PIPELINE_FUZZ": "fuzz"}, external=True)


@nox.session
def gpu(session: nox.Session) -> None:
    """The gpu-marked tests only: 3-step runs asserting VRAM and loss bounds on the real configs."""
    env = locked(session)
    session.run(str(BIN / "python"), "-m", "pytest", "-m", "gpu or multi_gpu", "-p", "no:xdist",
                *session.posargs, env=env, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over RUFF_PATHS; mypy over the files pyproject.toml's [tool.mypy] names (all but tests and this file)."""
    env = locked(session)
    session.run(str(BIN / "ruff"), "check", *RUFF_PATHS, env=env, external=True)
    session.run(str(BIN / "mypy"), env=env, external=True)


@nox.session
def check(session: nox.Session) -> None:
    """Preflight every shipped config (and its data) with no GPU and no weights."""
    configs = session.posargs or sorted(str(p) for p in (ROOT / "configs").glob("*.yaml"))
    pipeline(session, "check", *configs)


@nox.session
def train(session: nox.Session) -> None:
    """Full training through axolotl (the real SmolLM2-135M config without a GPU); `-- --resume` continues."""
    pipeline(session, "train", *session.posargs)


@nox.session
def merge(session: nox.Session) -> None:
    """Merge the newest finished adapter into its base model and verify the logits."""
    pipeline(session, "merge", *(session.posargs or ["--auto"]))


@nox.session(name="eval")
def eval_(session: nox.Session) -> None:
    """Evaluate the newest run: base vs tuned loss, chrF, style, retention; writes report.md/html."""
    pipeline(session, "evaluate", *session.posargs)


def build_image(session: nox.Session) -> None:
    # nox's own interpreter downloads: the image needs no locked environment here (CI builds both at once)
    session.run(sys.executable, "-m", "pip", "download", "-q", "-r", str(LOCK), "-d", "wheelhouse", external=True)
    session.run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes", "-r",
                str(ROOT / "models.lock"), "-d", "wheelhouse", external=True)
    session.run("docker", "build", "-f", "docker/Dockerfile", "--build-arg", "BASE_IMAGE=local/debian:bookworm",
                "--build-arg", "WHEELHOUSE=wheelhouse", "-t", "finetune-pipeline:cpu", ".", external=True)


@nox.session
def image(session: nox.Session) -> None:
    """Build the CPU image offline (local Debian base, wheelhouse of the lock); `nox -s tests` then runs it.
    Needs no locked environment, so it can run beside `nox -s env`."""
    build_image(session)


@nox.session
def container(session: nox.Session) -> None:
    """Build the CPU image offline (local Debian base, wheelhouse of the lock) and run the docker tests."""
    env = locked(session)
    build_image(session)
    session.run(str(BIN / "python"), "-m", "pytest", "-m", "docker", "-p", "no:xdist", *session.posargs,
                env={**env, "PIPELINE_IMAGE": "finetune-pipeline:cpu", "PIPELINE_DOCKER_REQUIRED": "1"},
                external=True)


@nox.session
def bundle(session: nox.Session) -> None:
    """An offline install bundle of the lock for a GPU machine: `-- --python-version 3.12 --provided FILE`."""
    args = session.posargs or ["--python-version", "3.12", "--provided", "tools/targets/lent-gpu-image.txt",
                               "--only", "tools/targets/runtime-minimal.txt", "--cuda", "130"]
    if "--out" not in args:
        args = [*args, "--out", "wheelhouse/bundle.tar.gz"]
    session.run(str(BIN / "python"), "tools/bundle.py", *args, env=locked(session), external=True)
