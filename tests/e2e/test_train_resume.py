"""`pipeline train` for real: SIGTERM mid-run, `--resume`, and the same run as one that was never stopped."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import TINY, only_run

from pipeline.core import runs

pytestmark = [pytest.mark.slow, pytest.mark.long]

#: two epochs of 18 steps; a checkpoint at the end of each (saves_per_epoch: 1)
SHORT = ["--set", "num_epochs=2"]


def train_losses(run: Path) -> dict[int, float]:
    records = runs.read_jsonl(run / "metrics.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def test_sigterm_then_resume_equals_an_uninterrupted_run(cli, tmp_path, step_reached):
    whole_dir, cut_dir = tmp_path / "whole", tmp_path / "cut"
    proc = cli("train", TINY, *SHORT, "--runs-dir", str(whole_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    whole = train_losses(only_run(whole_dir))
    assert sorted(whole) == list(range(1, 37))
    assert whole[36] < whole[1] - 2.0  # it visibly learns: ~7.6 -> ~4.8 on the tiny model

    child = subprocess.Popen([sys.executable, "-m", "pipeline", "train", TINY, *SHORT, "--runs-dir", str(cut_dir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    stopped_at = step_reached(cut_dir, 21, child, timeout=300)  # past the checkpoint at step 18
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err[-3000:]
    run = only_run(cut_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["last_checkpoint"] == "checkpoint-18"
    assert f"pipeline train --resume {run}" in err
    assert 21 <= stopped_at < 36

    proc = cli("train", "--resume", "--runs-dir", str(cut_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "from checkpoint-18 (step 18)" in proc.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    assert [a["status"] for a in manifest["attempts"]] == ["interrupted", "succeeded"]
    assert manifest["resumes"][0]["from_step"] == 18
    assert manifest["summary"]["steps"] == 36
    # the steps the stopped attempt ran past its checkpoint were re-run; their first logs are archived
    archived = [r["step"] for r in runs.read_jsonl(run / "metrics.attempt-1.jsonl") if r["kind"] == "train"]
    assert max(archived) >= 21

    resumed = train_losses(run)
    assert sorted(resumed) == sorted(whole)
    for step in whole:  # optimizer, scheduler, RNG and data order restored: the same losses
        assert math.isclose(resumed[step], whole[step], rel_tol=1e-5, abs_tol=1e-5), (step, resumed[step],
                                                                                        whole[step])
    assert (run / "output" / "adapter_model.safetensors").is_file()
