"""`pipeline smoke` for real: axolotl trains the tiny model on the CPU for a few steps.

The embedded default's smoke runs once per test session (conftest's `tiny_smoke`, with the profiler over
step 2) and the table and phase tests read it; its stored losses, and the same-seed pair, are
test_loss_regression's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support import TINY

pytestmark = pytest.mark.slow


def smoke_json(runs_dir: Path) -> dict:
    (path,) = runs_dir.glob("smoke-*.json")
    return json.loads(path.read_text())


def test_tiny_smoke_prints_the_table_and_meets_its_bounds(tiny_smoke):
    run, proc = tiny_smoke
    runs_dir = run.parent
    table = proc.stdout.splitlines()
    header = next(line for line in table if line.startswith("| Config"))
    assert header.split("|")[1:-1] == [" Config   ", " Runtime ", " Peak VRAM (RSS on CPU) ", " Trainable Params ",
                                       " Throughput (tok/s) ", " MFU ", " Final Loss "]
    row = next(line for line in table if line.startswith("| tiny_cpu"))
    assert "GiB RSS" in row
    assert row.split("|")[6].strip() == "-"  # no MFU on a CPU

    (result,) = smoke_json(runs_dir)["results"]
    assert result["steps"] == 3 and len(result["losses"]) == 3
    # a random-init model starts near ln(vocab) and three LoRA steps move it down, not up
    assert 6.5 < result["first_loss"] < 8.5
    assert result["final_loss"] < result["first_loss"]
    assert 0.1 < result["peak_memory_gib"] < 4.0  # process RSS on the CPU, the config's bound
    assert result["trainable_params"] == 35_584  # r=8 on every linear layer and lm_head of the tiny model
    assert result["throughput_tok_s"] > 0
    assert result["mfu"] is None

    assert runs_dir / result["run"] == run
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["exit_code"] == 0
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["max_steps"] == 3 and resolved["output_dir"] == str(run / "output")
    assert "pipeline.in_axolotl.recorder.MetricsRecorder" in resolved["plugins"]
    assert "pipeline" not in resolved
    assert (run / "source.yaml").read_text() == Path(TINY).read_text()
    assert (run / "output" / "adapter_model.safetensors").is_file()


def test_phases_say_where_the_wall_time_went_and_a_step_can_be_profiled(tiny_smoke):
    run, proc = tiny_smoke
    (result,) = smoke_json(run.parent)["results"]
    phases = result["phases_s"]
    names = ["configured", "data_ready", "model_loaded", "training", "first_step", "trained", "saved"]
    assert list(phases) == names
    times = [phases[n] for n in names]
    assert times == sorted(times) and times[0] > 0 and times[-1] <= result["runtime_s"]
    assert "tiny_cpu: checks " in proc.stdout and "| startup " in proc.stdout and "| first step " in proc.stdout

    profile = json.loads((run / "profile.json").read_text())
    assert profile["step"] == 2 and profile["clock"] == "cpu" and profile["total_ms"] > 0
    assert "matmul" in profile["groups"]  # a Llama step is mostly aten::mm on the CPU
    assert abs(sum(g["share"] for g in profile["groups"].values()) - 1) < 0.01
    assert "aten::mm" in (run / "profile.txt").read_text()


def test_the_smoke_manifest_is_what_the_schema_declares(tiny_smoke):
    from pipeline.core import manifest

    run, _ = tiny_smoke
    on_disk = json.loads((run / "manifest.json").read_text())
    manifest.check(on_disk)  # every field named, every value of its declared type
    assert manifest.tolerant(on_disk) == on_disk
    assert {"max_steps", "world_size", "exit_code", "runtime_s", "summary", "finished"} <= set(on_disk)
