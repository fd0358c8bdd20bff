"""How a run ended (`pipeline.core.outcome`): axolotl's exit status weighed against what its recorder wrote,
the data it read, and a manifest the disk may refuse. Real run folders, metrics files and data files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import tmpfs

from pipeline.core import outcome, provenance, runs
from pipeline.stages import train


def run_folder(tmp_path: Path, records: list[dict] | None, prepared: Path | None = None) -> runs.Run:
    """A run folder as a stage leaves it when axolotl has exited: metrics.jsonl (None: never written),
    config.yaml naming its prepared data, and a running manifest."""
    run = runs.Run(tmp_path / "20260101-000000-cfg-train")
    run.path.mkdir(parents=True)
    if records is not None:
        run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (run.path / "config.yaml").write_text(f"base_model: /m\ndataset_prepared_path: {prepared or tmp_path / 'p'}\n")
    runs.write_json(run.manifest_path, {"run": run.name, "status": "running"})
    return run


def logged(planned: int, steps: int, *, end: bool = True) -> list[dict]:
    """What the recorder writes for a run planned at `planned` steps that trained `steps` of them."""
    out: list[dict] = [{"kind": "start", "max_steps": planned, "trainable_params": 10}]
    out += [{"kind": "train", "step": s, "loss": 5.0 - s / 10} for s in range(1, steps + 1)]
    return out + ([{"kind": "end", "rank": 0, "step": steps}] if end else [])


def smoke(run: runs.Run, child: int, planned: int = 3, hashes: dict[str, str] | None = None) -> outcome.Outcome:
    """Judged as `pipeline smoke` judges it: every planned step must have been logged."""
    records = run.metrics()
    steps = max((r["step"] for r in records if r.get("kind") == "train"), default=0)
    return outcome.judge(run, child, records, stage="smoke", subject=Path("configs/x.yaml"), planned=planned,
                         reached=steps >= planned, hashes=hashes or {})


def training(run: runs.Run, child: int, hashes: dict[str, str] | None = None,
             keep_prepared: bool = False) -> outcome.Outcome:
    """Judged as `pipeline train` judges it: the recorder saw training end at its planned step."""
    records = run.metrics()
    planned = next((r.get("max_steps") for r in records if r.get("kind") == "start"), None)
    return outcome.judge(run, child, records, stage="train", subject=run.path, planned=planned,
                         reached=train.finished_at(records), hashes=hashes or {}, keep_prepared=keep_prepared)


def test_a_run_that_trained_every_planned_step_and_exited_0_succeeded(tmp_path):
    run = run_folder(tmp_path, logged(3, 3))
    assert smoke(run, 0) == outcome.Outcome("succeeded", 0, None)
    assert training(run, 0) == outcome.Outcome("succeeded", 0, None)


def test_a_child_that_exited_0_but_logged_fewer_steps_failed_with_steps_short(tmp_path):
    run = run_folder(tmp_path, logged(3, 2))
    log = run.path / "axolotl.log"
    ended = smoke(run, 0)
    assert (ended.status, ended.exit_code, ended.ok) == ("failed", 3, False)
    assert ended.problem == f"configs/x.yaml: steps-short: axolotl exited 0 after 2 of 3 steps; see {log}"
    ended = training(run, 0)
    assert (ended.status, ended.exit_code) == ("failed", 3)
    assert ended.problem == f"{run.path}: steps-short: axolotl exited 0 at step 2 of 3; see {log}"


def test_training_counts_only_an_end_at_the_last_planned_step(tmp_path):
    """Every step logged but no `end` record (axolotl died after its last log line yet exited 0): a smoke has
    its table, a training run has no adapter to show for it."""
    run = run_folder(tmp_path, logged(3, 3, end=False))
    assert smoke(run, 0).ok
    assert training(run, 0).problem == (f"{run.path}: steps-short: axolotl exited 0 at step 3 of 3; "
                                        f"see {run.path / 'axolotl.log'}")


def test_metrics_absent_after_exit_0_means_the_recorder_never_loaded(tmp_path, capsys):
    run = run_folder(tmp_path, None)
    assert not run.metrics_path.exists()
    ended = training(run, 0)
    assert (ended.status, ended.exit_code) == ("failed", 3)
    assert ended.problem == (f"{run.path}: metrics-missing: axolotl ran but the metrics recorder did not load "
                             f"(see {run.path / 'axolotl.log'}); is the pipeline package importable there?")
    assert smoke(run, 0).problem.startswith("configs/x.yaml: metrics-missing: ")
    ended.say()
    assert capsys.readouterr().err == ended.problem + "\n"


def test_a_forwarded_signal_is_an_interruption_and_a_crash_a_failure_with_no_line_of_its_own(tmp_path, capsys):
    run = run_folder(tmp_path, logged(40, 2, end=False))
    assert training(run, 130) == outcome.Outcome("interrupted", 130, None)  # SIGINT: axolotl saved, exited 0
    assert training(run, 143) == outcome.Outcome("interrupted", 130, None)  # SIGTERM
    assert training(run, 137) == outcome.Outcome("failed", 3, None)  # killed (out of memory), said by the stage
    assert smoke(run, 1) == outcome.Outcome("failed", 3, None)
    outcome.Outcome("failed", 3, None).say()
    assert capsys.readouterr().err == ""


def test_data_edited_during_the_run_fails_it_and_drops_the_rows_prepared_from_it(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"messages": []}\n')
    hashes = provenance.data_hashes([data])
    prepared = tmp_path / "prepared" / "key"
    (prepared / "train").mkdir(parents=True)
    run = run_folder(tmp_path, logged(3, 3), prepared=prepared)
    assert training(run, 0, hashes).ok  # unchanged: nothing to say

    data.write_text('{"messages": [1]}\n')  # edited while axolotl read it
    ended = training(run, 0, hashes, keep_prepared=True)
    assert (ended.status, ended.exit_code) == ("failed", 1)
    assert ended.problem == (f"{run.path}: data-changed: {data} changed during the run, so the manifest's hashes "
                             f"may not be what trained; the run is marked failed: train again")
    assert prepared.is_dir()  # a resumed run prepared its rows before the edit: they are the old data's

    ended = smoke(run, 0, hashes=hashes)
    assert (ended.status, ended.exit_code) == ("failed", 1)
    assert ended.problem == (f"configs/x.yaml: data-changed: {data} changed while the run read it, so the manifest's "
                             f"hashes may not be what trained; the run is marked failed, smoke it again")
    assert not prepared.exists()  # it may hold the new rows under the old content's key

    data.unlink()  # gone counts as changed; a run that failed anyway keeps its exit code
    ended = training(run, 137, hashes)
    assert (ended.status, ended.exit_code) == ("failed", 3) and "data-changed" in ended.problem
    ended = training(run, 130, hashes)  # interrupted, but not resumable on other data: failed
    assert (ended.status, ended.exit_code) == ("failed", 130)


def test_the_end_is_recorded_in_the_manifest_with_its_problem(tmp_path, capsys):
    run = run_folder(tmp_path, logged(3, 2))
    ended = training(run, 0)
    assert outcome.record(run, ended, then="; never shown", exit_code=ended.exit_code, axolotl_exit_code=0)
    manifest = run.manifest()
    assert manifest["status"] == "failed" and manifest["finished"]
    assert manifest["problem"] == ended.problem and manifest["exit_code"] == 3
    assert capsys.readouterr().err == ""


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem, filled to the last byte (needs root, as in CI)."""
    with tmpfs(tmp_path / "small-disk", "1m") as where:
        yield where


def fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_a_manifest_the_full_disk_refuses_is_one_line_and_the_manifest_still_says_running(full_disk, capsys):
    run = run_folder(full_disk, logged(3, 3))
    fill(full_disk)  # and no reserve file left in the run folder to give up
    ended = training(run, 0)
    resume = f"; after freeing space: pipeline train --resume {run.path}"
    assert not outcome.record(run, ended, then=resume, exit_code=0)
    assert capsys.readouterr().err == (f"{run.manifest_path}: run-unwritable: cannot record how the run ended (No "
                                       f"space left on device); `pipeline runs` shows it as killed{resume}\n")
    assert run.manifest()["status"] == "running"
