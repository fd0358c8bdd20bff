"""`pipeline train` without running axolotl: checkpoints, resume selection, metrics rewind, bad input."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipeline.core import runs
from pipeline.core.errors import UserError
from pipeline.stages import train


def make_checkpoint(output: Path, step: int, *, state: str | None = "ok", weights: bool | str = True) -> Path:
    path = output / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if weights:
        save_file({"w": torch.zeros(4)}, str(path / "adapter_model.safetensors"))
    if weights == "cut":  # a full disk or a killed copy: the header promises more bytes than there are
        data = (path / "adapter_model.safetensors").read_bytes()
        (path / "adapter_model.safetensors").write_bytes(data[:-3])
    if state == "ok":
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    elif state == "torn":
        (path / "trainer_state.json").write_text('{"global_step": ')
    elif state == "wrong-step":
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step - 1}))
    return path


def test_the_last_complete_checkpoint_skips_half_written_ones(tmp_path):
    out = tmp_path / "output"
    make_checkpoint(out, 18)
    make_checkpoint(out, 36)
    make_checkpoint(out, 54, state=None)           # killed before trainer_state.json
    make_checkpoint(out, 72, state="torn")         # killed while writing it
    make_checkpoint(out, 90, state="wrong-step")
    make_checkpoint(out, 108, weights=False)
    make_checkpoint(out, 126, weights="cut")
    (out / "checkpoint-x").mkdir()
    assert train.last_complete_checkpoint(out) == out / "checkpoint-36"
    assert [p.name for p in train.checkpoints(out)] == [f"checkpoint-{n}" for n in (18, 36, 54, 72, 90, 108, 126)]

    gone = train.discard_after(out, 36)
    assert [p.name for p in gone] == ["checkpoint-54", "checkpoint-72", "checkpoint-90", "checkpoint-108",
                                      "checkpoint-126"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-18", "checkpoint-36", "checkpoint-x"]
    assert train.last_complete_checkpoint(tmp_path / "nothing") is None


def write_metrics(run: runs.Run, records: list[dict]) -> None:
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_rewind_keeps_steps_up_to_the_checkpoint_and_archives_the_rest(tmp_path):
    run = runs.create(tmp_path, "cfg", "train")
    records = [{"kind": "start", "max_steps": 6}, {"kind": "eval", "step": 0, "eval_loss": 9.0}]
    records += [{"kind": "train", "step": s, "loss": 10.0 - s} for s in range(1, 6)]
    records += [{"kind": "eval", "step": 4, "eval_loss": 5.0}]
    write_metrics(run, records)
    archive = train.rewind_metrics(run, 3)
    assert archive == run.path / "metrics.attempt-1.jsonl"
    assert runs.read_jsonl(archive) == records
    kept = run.metrics()
    assert [r.get("step") for r in kept if r["kind"] == "train"] == [1, 2, 3]
    assert [r["step"] for r in kept if r["kind"] == "eval"] == [0]
    assert kept[0]["kind"] == "start"

    write_metrics(run, records)
    assert train.rewind_metrics(run, 0) == run.path / "metrics.attempt-2.jsonl"
    assert run.metrics() == []


def test_a_run_is_finished_only_when_the_recorder_saw_the_last_step():
    start = {"kind": "start", "max_steps": 72}
    assert train.finished_at([start, {"kind": "end", "step": 72}])
    assert not train.finished_at([start, {"kind": "train", "step": 40}])  # SIGINT: axolotl exits 0, no end
    assert not train.finished_at([start, {"kind": "end", "step": 40}])
    assert not train.finished_at([])


def fake_run(root: Path, name: str, **manifest) -> runs.Run:
    path = root / name
    path.mkdir(parents=True)
    run = runs.Run(path)
    runs.write_json(run.manifest_path, {"run": name, "stage": "train", **manifest})
    return run


def test_resume_picks_the_newest_unfinished_train_run(tmp_path):
    cfg_a, cfg_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    cfg_a.write_text("x: 1\n")
    cfg_b.write_text("x: 2\n")
    fake_run(tmp_path, "20260101-000000-a-train", status="interrupted", config={"path": str(cfg_a.resolve())})
    fake_run(tmp_path, "20260102-000000-b-train", status="failed", config={"path": str(cfg_b.resolve())})
    fake_run(tmp_path, "20260103-000000-a-train", status="succeeded", config={"path": str(cfg_a.resolve())})
    fake_run(tmp_path, "20260104-000000-a-smoke", status="interrupted", stage="smoke")
    # a run whose manifest says running but whose process is alive (this test's parent) is not touched
    fake_run(tmp_path, "20260105-000000-a-train", status="running", pid=os.getppid(), host=socket.gethostname())

    assert train.find_resumable(tmp_path, "", None).name == "20260102-000000-b-train"
    assert train.find_resumable(tmp_path, "", str(cfg_a)).name == "20260101-000000-a-train"
    # `train --resume CONFIG`: argparse hands the config to --resume
    assert train.find_resumable(tmp_path, str(cfg_a), None).name == "20260101-000000-a-train"
    assert train.find_resumable(tmp_path, "20260101-000000-a-train", None).name == "20260101-000000-a-train"


def test_a_running_manifest_of_a_dead_process_can_be_resumed(tmp_path):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    fake_run(tmp_path, "20260101-000000-a-train", status="running", pid=dead, host=socket.gethostname())
    assert train.find_resumable(tmp_path, "", None).name == "20260101-000000-a-train"


@pytest.mark.parametrize("name, manifest, rule", [
    ("nope", None, "run-missing"),
    ("done", {"status": "succeeded"}, "resume-finished"),
    ("smoke", {"status": "failed", "stage": "smoke"}, "resume-not-train"),
    ("live", {"status": "running", "pid": os.getppid(), "host": socket.gethostname()}, "resume-running"),
])
def test_resume_refuses_runs_it_cannot_continue(tmp_path, name, manifest, rule):
    if manifest is not None:
        fake_run(tmp_path, name, **manifest)
    with pytest.raises(UserError) as exc:
        train.find_resumable(tmp_path, name, None)
    assert exc.value.findings[0].rule == rule


def test_resume_with_nothing_to_resume_is_a_usage_error(tmp_path):
    with pytest.raises(UserError) as exc:
        train.find_resumable(tmp_path / "runs", "", None)
    assert exc.value.findings[0].rule == "resume-none"


def test_progress_prints_one_line_per_epoch_and_evaluation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    out = io.StringIO()
    progress = train.Progress(path, out)
    steps = [{"kind": "train", "step": s, "epoch": s / 3, "loss": 5.0 - s / 10, "learning_rate": 1e-3,
              "elapsed_s": s} for s in range(1, 7)]
    lines = [{"kind": "start", "max_steps": 6}, *steps[:3], {"kind": "eval", "step": 3, "eval_loss": 4.5},
             *steps[3:]]
    with path.open("w") as fh:
        for r in lines:
            fh.write(json.dumps(r) + "\n")
        fh.write('{"kind": "train", "st')  # a line still being written is left for the next poll
    progress.poll()
    shown = [line for line in out.getvalue().splitlines() if line]
    assert shown == [
        "[train] epoch 1 done: step 3/6, loss 4.7000, lr 1.00e-03, 3s",
        "[train] eval at step 3/6: validation loss 4.5000",
        "[train] epoch 2 done: step 6/6, loss 4.4000, lr 1.00e-03, 6s",
    ]


def test_progress_of_a_resumed_run_does_not_call_its_first_step_an_epoch(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"kind": "train", "step": 18, "epoch": 1.0, "loss": 4.0}) + "\n")
    out = io.StringIO()
    progress = train.Progress(path, out)  # starts at the end of what the earlier attempt wrote
    with path.open("a") as fh:
        fh.write(json.dumps({"kind": "train", "step": 19, "epoch": 19 / 18, "loss": 4.0}) + "\n")
    progress.poll()
    assert out.getvalue() == ""


@pytest.mark.parametrize("args, rule", [
    (["train", "--resume"], "resume-none"),
    (["train", "--resume", "--set", "learning_rate=0.1"], "resume-overrides"),
    (["train", "configs/nope.yaml"], "config-missing"),
])
def test_bad_train_input_is_one_line_exit_2_and_no_run_folder(cli, runs_dir, args, rule):
    proc = cli(*args, "--runs-dir", str(runs_dir))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # the last line is the finding (imports of torch and axolotl may print warnings before it)
    assert f": {rule}: " in lines[-1] and sum(f": {rule}: " in line for line in lines) == 1, lines
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_without_a_gpu_train_defaults_to_the_real_model_and_smoke_to_the_tiny_one(monkeypatch, root):
    import torch

    from pipeline import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.default_train_config() == "configs/smollm2_cpu.yaml"
    assert cli.default_configs() == ["configs/tiny_cpu.yaml"]
    source = (root / "configs" / "smollm2_cpu.yaml").read_text()
    assert "base_model: pipeline://smollm2-135m-instruct" in source
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cli.default_train_config() == "configs/lora_style_transfer.yaml"
