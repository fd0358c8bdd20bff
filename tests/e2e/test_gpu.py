"""GPU suite: 3-step runs of the tiny config and of the real configs on Llama-3.1-8B's shape.

The real configs name meta-llama/Llama-3.1-8B; here its architecture is built with random weights
(`pipeline://random/llama-3.1-8b`: the same shapes, so the same memory and speed), so the suite runs on a
GPU machine with no hub access. Each run must meet the bounds its config declares (peak allocated VRAM,
final loss); the assertions below restate them so a loosened config cannot pass silently.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.gpu

EIGHT_B = "pipeline://random/llama-3.1-8b"
LORA_R64_ALL_LINEAR_8B = 167_772_160  # 32 layers x r(64) x sum of (in + out) of the 7 projections
#: per-step losses of the 6-step smokes below as the configs are written (micro batch 1 x accumulation 4), the loss
#: weighted per token (pipeline.in_axolotl.loss), measured on an NVIDIA H100 80GB HBM3 (driver 580.159.04, torch
#: 2.11.0+cu130, transformers 5.17.0, peft 0.21.0, axolotl 0.19.0; benchmarks/results/gpu-suite-losses-H100.json).
#: Asserted as torchtune's recipe tests do, so a change of how the training is computed (another split of the
#: batch, no recomputation) cannot silently change what it trains
STORED_LOSSES = {
    "configs/lora_style_transfer.yaml": [12.574042320251465, 11.55981159210205, 9.83708381652832, 8.426952362060547,
                                         7.420860767364502, 6.924003601074219],
    "configs/qlora_style_transfer.yaml": [12.584197998046875, 11.573970794677734, 9.845756530761719, 8.419675827026367,
                                          7.409152984619141, 6.913084506988525],
}
#: optimizer steps of every 8B smoke here: enough for the loss to fall and for a change of weighting to show
STEPS = "6"
#: the LoRA config's 6 steps at micro batch 1 x accumulation 4 on the benchmarks' 1,500 synthetic rows (variant `lora`
#: of benchmarks/run.py on the same H100, benchmarks/results/NVIDIA-H100-80GB-HBM3-split.json, where `lora_4x1` ran
#: within 1.5e-4 of it): the style data's 13 packed sequences are fewer than 6 steps
#: of 4 need, and axolotl's packing sampler drops an epoch's incomplete last micro batch, so at micro batch 4 the
#: second epoch would start on other sequences than at 1 and the comparison would not be of one training
STORED_SPLIT_LOSSES = [12.505375862121582, 11.185324668884277, 8.961174011230469, 7.007383346557617, 5.708445072174072,
                       5.49331521987915]
#: relative tolerance on every stored loss: 5x the widest gap measured between two computations of one training
#: (the steps fall by about 1 each: a change of data, learning rate or adapter moves them far more)
LOSS_RTOL = 1e-3


def smoke(cli, runs_dir: Path, config: str, *extra: str) -> dict:
    proc = cli("smoke", config, "--runs-dir", str(runs_dir), "--json", str(runs_dir / "smoke.json"), *extra,
               timeout=1200)
    print(proc.stdout[-2500:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((runs_dir / "smoke.json").read_text())["results"][0]
    if record := os.environ.get("PIPELINE_GPU_LOSSES"):  # where the stored losses above are measured from
        with open(record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"config": config, "extra": list(extra), "losses": result["losses"],
                                 "peak_gib": result["peak_memory_gib"]}) + "\n")
    return result


def bounds_of(config: str) -> dict:
    return yaml.safe_load(Path(config).read_text())["pipeline"]["bounds"]


def test_tiny_smoke_on_the_gpu(cli, runs_dir):
    r = smoke(cli, runs_dir, "configs/tiny_cpu.yaml")
    assert r["device"] == "gpu"
    assert 0 < r["peak_memory_gib"] <= bounds_of("configs/tiny_cpu.yaml")["peak_vram_gib"]
    assert r["trainable_params"] == 35_584  # r=8 on every linear layer and lm_head
    assert r["final_loss"] < r["first_loss"] < 8.5


#: the project's targets: the LoRA config computes for a 32 GiB card within 30 GiB, the QLoRA one for a 24 GiB card
@pytest.mark.parametrize("config,max_gib", [("configs/lora_style_transfer.yaml", 30.0),
                                            ("configs/qlora_style_transfer.yaml", 22.0)])
def test_real_config_on_the_8b_shape(cli, runs_dir, config, max_gib):
    r = smoke(cli, runs_dir, config, "--set", f"base_model={EIGHT_B}", "--max-steps", STEPS)
    assert r["device"] == "gpu"
    assert r["trainable_params"] == LORA_R64_ALL_LINEAR_8B
    assert r["peak_memory_gib"] <= min(max_gib, bounds_of(config)["peak_vram_gib"])
    # random weights with std 0.02 over a 128,256-token vocabulary: the loss starts near ln(128256) = 11.8
    assert all(math.isfinite(x) for x in r["losses"]) and len(r["losses"]) == int(STEPS)
    assert r["final_loss"] <= bounds_of(config)["final_loss"]
    assert r["losses"] == pytest.approx(STORED_LOSSES[config], rel=LOSS_RTOL)


@pytest.mark.parametrize("config", ["configs/lora_style_transfer.yaml", "configs/qlora_style_transfer.yaml"])
def test_the_fastest_computation_trains_the_same(cli, runs_dir, config):
    """`pipeline.compute: fastest` for this card rather than the config's 32 or 24 GiB (its peak bound raised to let
    it use the card): the same per-step losses as the computation as written, the peak within the estimate's
    tolerance."""
    import torch

    from pipeline.checks.memory import ESTIMATE_TOLERANCE

    card_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    r = smoke(cli, runs_dir, config, "--set", f"base_model={EIGHT_B}", "--set", "pipeline.compute=fastest",
              "--set", f"pipeline.compute_gpu_mem={card_gib:.1f}GiB", "--set", "pipeline.bounds.peak_vram_gib=140",
              "--max-steps", STEPS)
    compute = json.loads((runs_dir / r["run"] / "manifest.json").read_text())["compute"]
    print(compute["summary"])
    assert compute["card_gib"] > 0 and compute["estimate_chosen"] is not None
    assert r["trainable_params"] == LORA_R64_ALL_LINEAR_8B
    assert r["losses"] == pytest.approx(STORED_LOSSES[config], rel=LOSS_RTOL)
    estimated = compute["estimate_chosen"]["peak_gib"]
    assert estimated * (1 - ESTIMATE_TOLERANCE) <= r["peak_memory_gib"] <= estimated * (1 + ESTIMATE_TOLERANCE)


def test_a_large_cards_split_trains_as_a_small_cards(cli, runs_dir, tmp_path):
    """The LoRA config at micro batch 4 x accumulation 1 (what an 80 GiB card fits) takes the same steps as at
    1 x 4 as written (what a 24-32 GiB card fits): the per-token loss makes the split immaterial."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", Path("benchmarks/run.py").resolve())
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = bench.synthetic(tmp_path / "synthetic.jsonl")
    config = "configs/lora_style_transfer.yaml"
    r = smoke(cli, runs_dir, config, "--set", f"base_model={EIGHT_B}", "--max-steps", STEPS, "--set",
              f"datasets.0.path={data}", "--set", "micro_batch_size=4", "--set", "gradient_accumulation_steps=1",
              "--set", "multipack_real_batches=true", "--set", "pipeline.bounds.peak_vram_gib=78")
    manifest = json.loads((runs_dir / r["run"] / "manifest.json").read_text())
    assert manifest["loss_weighting"] == "per-token"
    assert r["losses"] == pytest.approx(STORED_SPLIT_LOSSES, rel=LOSS_RTOL)


def test_merge_on_the_gpu(cli, runs_dir):
    """Train the tiny config on the GPU, merge through axolotl, and verify merged vs base + adapter logits."""
    proc = cli("train", "configs/tiny_cpu.yaml", "--set", "max_steps=6", "--runs-dir", str(runs_dir), timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = cli("merge", "--auto", "--runs-dir", str(runs_dir), timeout=900)
    print(proc.stderr[-2500:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = [p for p in runs_dir.iterdir() if (p / "manifest.json").is_file()]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["hardware"]["gpus"], "the run did not see a GPU"
    assert manifest["merge"]["status"] == "verified"
    assert json.loads((run / "merge.json").read_text())["ok"] is True
    assert (run / "merged" / "config.json").is_file()
