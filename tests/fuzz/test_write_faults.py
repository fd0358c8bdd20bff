"""Faults while writing: a full disk or a read-only cache while a model is built, a dataset is prepared, an
evaluation or a merge is written. Each ends in one line and its documented exit code, and leaves nothing
half-written where a later run would take it as whole.

Where the write is pipeline's own and cheap to reach, the disk is real: a small tmpfs, or a read-only bind
mount (both need root, as in CI; elsewhere those tests skip with the reason). Where it sits behind
minutes of model loading (the evaluation's report, the merge's record), the disk's refusal is injected as
the OSError(ENOSPC) the kernel returns, after a real run folder has been read. An adapter saved by axolotl
onto a disk that fills is `tests/e2e/test_faults.py`'s (a real 16 MiB tmpfs filled during training).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fuzzkit
import pytest
from support import mount, run_here, tmpfs

from pipeline.core import engine, runs
from pipeline.core import prepared as prepared_data

pytestmark = pytest.mark.faults

TINY = "configs/tiny_cpu.yaml"


def child(args: list[str], cwd: Path, cache: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """`pipeline ARGS` in a child process with its own model cache, as a user runs it."""
    env = {**os.environ, "PIPELINE_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def here(args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """`pipeline ARGS` in this process with its own model cache: for a command refused before it starts a
    child (support.run_here)."""
    return run_here(*args, cwd=cwd, env={"PIPELINE_CACHE": str(cache)})


def one_line(proc: subprocess.CompletedProcess[str], code: int, rule: str) -> str:
    """The exit code, no traceback, and exactly one finding line, of `rule`; returns it."""
    said = proc.stdout + proc.stderr
    assert "Traceback" not in said, said[-3000:]
    assert proc.returncode == code, said[-3000:]
    found = [line for line in said.splitlines() if fuzzkit.FINDING.match(line) and not line.startswith("warning:")]
    assert [fuzzkit.FINDING.match(line)["rule"] for line in found] == [rule], said[-3000:]
    return found[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for part in ("configs", "data"):
        shutil.copytree(fuzzkit.ROOT / part, root / part)
    return root


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 300 KiB filesystem: the issue's reproducer (a model cache with no room for the model)."""
    with tmpfs(tmp_path / "small-disk", "300k") as where:
        yield where


@pytest.fixture
def read_only_cache(tmp_path: Path) -> Iterator[Path]:
    """An empty model cache that is a read-only bind mount."""
    source, where = tmp_path / "cache-source", tmp_path / "cache"
    source.mkdir()
    where.mkdir()
    if mount("--bind", str(source), str(where)).returncode != 0:
        pytest.skip("cannot bind-mount here (not root); CI runs these as root")
    try:
        if mount("-o", "remount,ro,bind", str(where)).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


# --- a model built into the cache ---------------------------------------------------------------------------

def test_a_model_built_into_a_full_cache_is_one_line_and_leaves_nothing(project, small_disk, tmp_path):
    """The issue's reproducer: `pipeline smoke` built a random model into a full cache and died in
    save_pretrained with a SafetensorError traceback (exit 1)."""
    before = fuzzkit.fingerprint(project / "configs", project / "data")
    proc = here(["smoke", TINY, "--runs-dir", str(tmp_path / "runs")], project, small_disk)
    line = one_line(proc, 3, "cache-unwritable")
    assert "No space left on device" in line and "tiny-llama" in line
    assert list((small_disk / "models").iterdir()) == []  # the half-built folder is gone
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    assert fuzzkit.fingerprint(project / "configs", project / "data") == before
    line = one_line(here(["build-model", "pipeline://tiny-llama"], project, small_disk), 3, "cache-unwritable")
    assert "No space left on device" in line and list((small_disk / "models").iterdir()) == []


def test_a_read_only_cache_is_one_line_and_check_still_works(project, read_only_cache, tmp_path):
    proc = here(["smoke", TINY, "--runs-dir", str(tmp_path / "runs")], project, read_only_cache)
    assert "Read-only file system" in one_line(proc, 3, "cache-unwritable")
    assert "Read-only file system" in one_line(here(["build-model", "pipeline://tiny-llama"], project,
                                                     read_only_cache), 3, "cache-unwritable")
    check = here(["check", TINY], project, read_only_cache)  # its caches are a convenience: it works without
    assert check.returncode == 0 and "Traceback" not in check.stderr, check.stderr[-3000:]


def test_a_disk_error_inside_a_build_is_told_apart_from_other_failures():
    from pipeline.core import models

    class SafetensorError(Exception):  # safetensors' own, which carries the OS error only in its message
        pass

    assert models.refused_write(SafetensorError("Error while serializing: I/O error: No space left on device "
                                                "(os error 28)")) == os.strerror(errno.ENOSPC)
    assert models.refused_write(OSError(errno.EROFS, "Read-only file system")) == "Read-only file system"
    assert models.refused_write(OSError(errno.ENOENT, "No such file")) is None
    assert models.refused_write(RuntimeError("(os error 28)")) is None  # only safetensors' error is read so


# --- prepared data ------------------------------------------------------------------------------------------

KEY, SPLIT = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"


def prepared(tmp_path: Path, *files: str) -> Path:
    folder = tmp_path / "prepared" / KEY
    (folder / SPLIT).mkdir(parents=True)
    (folder / SPLIT / "data-00000-of-00001.arrow").write_bytes(b"ARROW1" + b"\0" * 64)
    for name in files:
        (folder / SPLIT / name).write_text('{"a": 1}' if name.endswith(".json") else "")
    return folder


@pytest.mark.parametrize("files, kept", [
    (("state.json", "dataset_info.json"), True),   # whole: what `datasets` writes last is there
    (("state.json",), False),                      # the disk filled before dataset_info.json
    ((), False),                                    # it filled while the arrow file was written
])
def test_prepared_data_cut_short_is_dropped_before_axolotl_reads_it(tmp_path, files, kept):
    folder = prepared(tmp_path, *files)
    gone = prepared_data.drop_incomplete_prepared(folder)
    assert (folder / SPLIT).exists() is kept and gone == ([] if kept else [folder / SPLIT])


def test_prepared_data_being_written_now_is_left_alone(tmp_path):
    import fcntl

    folder = prepared(tmp_path)  # cut short, but another axolotl is preparing it: it holds the lock
    fd = os.open(folder / prepared_data.PREPARE_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert prepared_data.drop_incomplete_prepared(folder) == [] and (folder / SPLIT).exists()
    finally:
        os.close(fd)
    assert prepared_data.drop_incomplete_prepared(tmp_path / "prepared") == []  # not a content key: never touched


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem for prepared data: room for axolotl's lock, none for the rows."""
    with tmpfs(tmp_path / "prepared-disk", "64k") as where:
        yield where


@pytest.mark.slow
def test_a_disk_that_fills_while_data_is_prepared_fails_the_run_and_the_next_prepares_afresh(project, tiny_disk,
                                                                                             tmp_path):
    cache = fuzzkit.ROOT / ".cache" / "pipeline-tests"  # the shared model cache: the model is built already
    args = ["smoke", TINY, "--max-steps", "1", "--runs-dir", str(tmp_path / "runs"),
            "--set", f"dataset_prepared_path={tiny_disk}"]
    proc = child(args, project, cache)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 3 and "Traceback" not in proc.stderr.split("==> smoke")[0], said[-3000:]
    (key,) = [p for p in tiny_disk.iterdir() if p.is_dir()]
    assert [p for p in key.iterdir() if p.is_dir()], "axolotl left nothing: the disk did not fill where meant"
    assert mount("-o", "remount,size=64m", str(tiny_disk)).returncode == 0  # space is back
    proc = child(args, project, cache)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert f"note: removed {key}/" in proc.stderr  # the cut-short split, before axolotl could load it


# --- an evaluation's report and a merge's record ------------------------------------------------------------

@pytest.fixture
def trained(tmp_path: Path) -> Path:
    from pipeline.core import models

    root = tmp_path / "project"
    fuzzkit.trained_run(root, models.resolve("pipeline://tiny-llama"))
    return root


def full_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The disk fills when `name` is written (through runs.write_json, as every record is)."""
    write_json = runs.write_json

    def write(path: Path, obj: Any) -> None:
        if path.name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_json(path, obj)

    monkeypatch.setattr(runs, "write_json", write)


def measured(name: str, n: int) -> Any:
    from pipeline.stages.evaluate import Measured

    return Measured(name=name, val_loss=4.0, heldout_nll=5.0, generations=["The river swelled."] * n, chrf=50.0,
                    chrf_per_example=[50.0] * n, style=0.0, terms_per_generation=0.0, content=1.0, seconds=0.1)


def test_an_evaluation_that_meets_a_full_disk_is_one_line_and_keeps_no_report(trained, monkeypatch):
    from pipeline.stages import evaluate

    run = trained / "runs" / fuzzkit.RUN
    monkeypatch.setattr(evaluate, "measure_all", lambda _run, _cfg, examples, *a: [measured("base", len(examples)),
                                                                                   measured("tuned", len(examples))])
    full_at(monkeypatch, "eval.json")
    monkeypatch.chdir(trained)
    code, out, err = fuzzkit.cli(["evaluate", str(run)], allowed=(3,))
    lines = [line for line in err.splitlines() if fuzzkit.FINDING.match(line)]
    assert len(lines) == 1 and "eval-unwritable" in lines[0] and "No space left on device" in lines[0], err
    assert not (run / "eval").exists() and not list(run.glob(".eval-*"))  # no report, whole or half
    assert json.loads((run / "manifest.json").read_text())["evaluate"]["status"] == "failed"


def test_a_merge_that_meets_a_full_disk_is_one_line_and_leaves_no_merged_folder(trained, monkeypatch):
    from pipeline.stages import merge

    run = trained / "runs" / fuzzkit.RUN

    def axolotl_merge(cmd: list[str], *args: Any, **kwargs: Any) -> int:
        out = Path(next(a for a in cmd if a.startswith("--output_dir=")).split("=", 1)[1]) / "merged"
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"model_type": "llama"}))  # whole, as merge checks
        (out / "model.safetensors").write_bytes(fuzzkit.safetensors(fuzzkit.WEIGHTS))
        return 0

    monkeypatch.setattr(engine, "run", axolotl_merge)
    monkeypatch.setattr(merge, "verify", lambda *a: {"ok": True, "checks": []})
    full_at(monkeypatch, "pipeline-merge.json")
    monkeypatch.chdir(trained)
    code, out, err = fuzzkit.cli(["merge", str(run)], allowed=(3,))
    assert "merge failed: cannot write (No space left on device)" in err, err
    assert not (run / "merged").exists() and not list(run.glob(".merging-*"))
    assert json.loads((run / "manifest.json").read_text())["merge"]["status"] == "failed"
