"""Outputs swapped into place whole (`pipeline.core.staging`): real folders, a real killed process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import ROOT

from pipeline.core import staging
from pipeline.core.proc import pid_alive

PREFIX = ".eval-"


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder`, by relative path, with its text."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def earlier_report(run: Path) -> Path:
    target = run / "eval"
    target.mkdir(parents=True)
    (target / "report.md").write_text("earlier report")
    return target


def killed_attempt(run: Path) -> int:
    """A process that stages a report, writes half of it and is killed outright (SIGKILL): its pid."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from pipeline.core import staging
        stage = staging.Staging(Path({str(run / "eval")!r}), {PREFIX!r}).open()
        (stage.path / "report.md").write_text("half a rep")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    return proc.pid


def test_the_folder_of_an_attempt_that_was_killed_is_removed_by_the_next(tmp_path):
    run = tmp_path / "run"
    target = earlier_report(run)
    dead = killed_attempt(run)
    assert not pid_alive(dead)
    left = run / f"{PREFIX}{dead}"
    assert tree(left) == {"report.md": "half a rep"}  # what a kill leaves: no one cleaned up
    (run / f"{PREFIX}{dead}-old").mkdir()  # and what a kill between the two renames of a swap leaves
    live = run / f"{PREFIX}{os.getppid()}"  # a staging folder of a process that is still running
    live.mkdir()
    (run / f"{live.name}-old").mkdir()  # and the target it is swapping out

    with staging.Staging(target, PREFIX) as stage:
        assert not left.exists() and not (run / f"{PREFIX}{dead}-old").exists()
        assert live.is_dir() and stage.path.is_dir() and not any(stage.path.iterdir())
    assert tree(target) == {"report.md": "earlier report"}
    assert sorted(p.name for p in run.iterdir()) == sorted(["eval", live.name, f"{live.name}-old"])


def test_clean_alone_removes_what_dead_attempts_left_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    target = earlier_report(run)
    dead = killed_attempt(run)
    (run / ".eval-notes.txt").write_text("a file of the user's, not a folder")
    assert staging.clean(run, PREFIX) == [run / f"{PREFIX}{dead}"]
    assert sorted(p.name for p in run.iterdir()) == [".eval-notes.txt", "eval"]
    assert tree(target) == {"report.md": "earlier report"}


def test_a_failure_inside_the_block_leaves_the_target_untouched_and_no_temporary(tmp_path):
    run = tmp_path / "run"
    target = earlier_report(run)
    with pytest.raises(RuntimeError, match="the model would not load"), staging.Staging(target, PREFIX) as stage:
        (stage.path / "report.md").write_text("half a new report")
        raise RuntimeError("the model would not load")
    assert tree(target) == {"report.md": "earlier report"}
    assert [p.name for p in run.iterdir()] == ["eval"]


def test_leaving_the_block_without_commit_leaves_nothing_where_a_later_run_would_look(tmp_path):
    """A failed check returns from inside the block: no target appears, and the staging folder goes."""
    run = tmp_path / "run"
    run.mkdir()
    target = run / "merged"

    def merge() -> str:
        with staging.Staging(target, ".merging-") as stage:
            (stage.path / "merged").mkdir()
            (stage.path / "merged" / "config.json").write_text("{}")
            assert not target.exists()  # nothing shows at the target while it is being written
            return "failed-verification"

    assert merge() == "failed-verification"
    assert list(run.iterdir()) == []


def test_an_existing_target_is_replaced_when_the_caller_asks(tmp_path):
    run = tmp_path / "run"
    target = earlier_report(run)
    with staging.Staging(target, PREFIX) as stage:
        (stage.path / "report.md").write_text("new report")
        (stage.path / "eval.json").write_text("{}")
        assert tree(target) == {"report.md": "earlier report"}  # until the commit
        assert stage.commit()
        assert tree(target) == {"eval.json": "{}", "report.md": "new report"}
    assert [p.name for p in run.iterdir()] == ["eval"]  # neither the staging folder nor the swapped-out one


def test_an_existing_target_is_kept_when_the_caller_asks(tmp_path):
    """Two builds of one model: the second to finish keeps the first's, and drops its own."""
    cache = tmp_path / "models"
    target = cache / "tiny"
    target.mkdir(parents=True)
    (target / "config.json").write_text("first build")
    with staging.Staging(target, ".tiny.host.") as stage:
        (stage.path / "config.json").write_text("second build")
        assert not stage.commit(replace=False)
    assert tree(target) == {"config.json": "first build"}
    assert [p.name for p in cache.iterdir()] == ["tiny"]


def test_a_folder_inside_the_staging_folder_can_be_what_is_committed(tmp_path):
    """Axolotl's merge writes `<stage>/merged` beside files of its own; only `merged` takes the target's place."""
    run = tmp_path / "run"
    target = run / "merged"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_text("earlier merge")
    with staging.Staging(target, ".merging-") as stage:
        (stage.path / "merged").mkdir()
        (stage.path / "merged" / "model.safetensors").write_text("new merge")
        (stage.path / "metrics.jsonl").write_text("")
        assert stage.commit(stage.path / "merged")
    assert tree(target) == {"model.safetensors": "new merge"}
    assert [p.name for p in run.iterdir()] == ["merged"]


def test_a_swap_whose_second_rename_fails_puts_the_earlier_target_back(tmp_path):
    run = tmp_path / "run"
    target = earlier_report(run)
    with staging.Staging(target, PREFIX) as stage, pytest.raises(FileNotFoundError):
        stage.commit(stage.path / "merged")  # nothing was written there
    assert tree(target) == {"report.md": "earlier report"}
    assert [p.name for p in run.iterdir()] == ["eval"]


def test_the_model_cache_cleans_builds_killed_on_this_host_and_leaves_other_hosts_alone(tmp_path):
    """The cache has no lock and may be shared: a pid names a process only on the host that wrote it."""
    from pipeline.core import models

    cache = tmp_path / "models"
    target = cache / "tiny-llama-r1-seed0"
    cache.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    ours = cache / f".{target.name}.{socket.gethostname()}.{proc.pid}"
    theirs = cache / f".{target.name}.another-host.{proc.pid}"  # perhaps still building over there
    for left in (ours, theirs):
        left.mkdir()
        (left / "model.safetensors").write_text("half")
    models._build_atomically(target, lambda out: (out / "config.json").write_text("{}"))
    assert tree(target) == {"config.json": "{}"}
    assert sorted(p.name for p in cache.iterdir()) == sorted([target.name, theirs.name])
