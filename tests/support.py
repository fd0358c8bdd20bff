"""Helpers the tests share (importable as `support`: tests/conftest.py puts this folder on sys.path).

Fixtures live in conftest.py; plain functions and constants a test module needs at import time (for
parametrisation, say) live here, so no test file works out the repository root or polls on its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: the repository root: every relative path the tests name (configs/, data/, tests/cases/) is under it
ROOT = Path(__file__).resolve().parents[1]
#: the embedded default config: a tiny Llama pipeline builds itself, trained on the CPU in seconds
TINY = "configs/tiny_cpu.yaml"


def only_run(runs_dir: Path) -> Path:
    """The one run folder under `runs_dir` (fails if there are none or several)."""
    found = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(found) == 1, f"expected one run folder in {runs_dir}, found {[p.name for p in found]}"
    return found[0]


def run_ok(cli: Callable[..., subprocess.CompletedProcess[str]], runs_dir: Path, *args: str,
           **kw: Any) -> Path:
    """Run one pipeline command into `runs_dir`, require exit 0, and return the one run folder it made."""
    proc = cli(*args, "--runs-dir", str(runs_dir), **kw)
    assert proc.returncode == 0, (args, proc.stderr[-3000:])
    return only_run(runs_dir)


def wait_until(ready: Callable[[], Any], *, what: str, timeout: float = 600,
               proc: subprocess.Popen[Any] | None = None, every: float = 0.02) -> Any:
    """Poll `ready()` until it returns something truthy and return that; fail after `timeout` seconds, or
    as soon as `proc` (the process that should make it true) has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = ready()
        if got:
            return got
        assert proc is None or proc.poll() is None, f"the process ended before {what}"
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def copy_run(run: Path, runs_dir: Path, name: str | None = None) -> Path:
    """Copy a finished run folder into `runs_dir`; the manifest's paths follow it (the folder moved)."""
    dest = runs_dir / (name or run.name)
    runs_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run, dest, symlinks=True)
    manifest = dest / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text())).replace(str(run), str(dest)))
    return dest


#: commands that start no child process of their own: the suite may run them in its own process (run_here)
IN_PROCESS = frozenset({"build-model", "check", "evaluate", "runs"})


def run_here(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`pipeline ARGS` through `pipeline.cli.main` in this process, from `cwd`, with `env` added to the
    environment for the call: what it prints, and its exit code as the shell would see it.

    For the tests of commands that start no child of their own (refusals, build-model, check, evaluate): a
    child process would only add its interpreter's start-up and the imports of torch and transformers,
    5-10 s a call on the suite's machine. The environment and the working folder are restored afterwards,
    and the run locks the command still holds are released, as its process's exit would.
    Settings a library reads once at its import (huggingface_hub's HF_HUB_OFFLINE and HF_ENDPOINT) cannot
    change here: tests of those run the command in a child (conftest's `cli`)."""
    from pipeline import cli
    from pipeline.core import lock

    out, err = io.StringIO(), io.StringIO()
    saved, before = dict(os.environ), os.getcwd()
    os.environ.update(env or {})
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as exc:  # argparse's own refusals
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        lock.release_all()
        os.chdir(before)
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


# --- real disks that fill or refuse writes (need root, as in CI) ---------------------------------------------

def mount(*args: str) -> subprocess.CompletedProcess[str]:
    """`mount ARGS`, its output captured (a failure is the caller's to judge)."""
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` (`1m`, `300k`) mounted on the new folder `where` for the block, unmounted
    after; the test is skipped where it cannot be mounted (not root)."""
    import pytest

    where.mkdir()
    proc = mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}); CI runs these as root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


class TookTooLong(AssertionError):
    """A command or reader that ran past its time (a FIFO opened for reading blocks for ever)."""


@contextlib.contextmanager
def bounded(seconds: float = 120, mib: int = 1024) -> Iterator[None]:
    """Fail what runs in the block past `seconds` (interrupted there: SIGALRM in this, the main, thread) or
    raises this process's peak memory by `mib` (/dev/zero read without a bound does)."""
    def alarm(signum: int, frame: Any) -> None:
        raise TookTooLong(f"ran past {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"took {elapsed:.1f} s"
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grew < mib, f"peak memory grew by {grew:.0f} MiB"
