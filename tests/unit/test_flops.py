"""Model FLOPs per token and MFU (pipeline.checks.flops), against the figures benchmarks/README.md states and
the smoke row that shows them."""

from __future__ import annotations

import pytest
from support import ROOT

from pipeline.checks import flops, shapes
from pipeline.core import config, models
from pipeline.stages import smoke

#: the shipped LoRA config's adapter on the 8B shape: r=64 on every linear layer, sequence_len 4096
LORA_8B = {"adapter": "lora", "lora_r": 64, "lora_target_linear": True, "sequence_len": 4096}


@pytest.fixture(scope="module")
def llama_8b() -> shapes.Shape:
    return shapes.shape(models.architecture_config("llama-3.1-8b"))


def test_flops_per_token_of_the_8b_shape_is_the_benchmarks_figure(llama_8b: shapes.Shape) -> None:
    f = flops.per_token(llama_8b, LORA_8B, "lora")
    # benchmarks/README.md: 35.3 GFLOP per token for r=64 on all linear layers of the 8B shape at S=4096
    assert round(f.per_token / 1e9, 1) == 35.3
    assert f.per_token == 4 * f.base_params + 6 * f.adapter_params + 8 * 32 * 4096 * 4096


def test_qlora_counts_as_lora_and_a_full_fine_tune_trains_every_weight(llama_8b: shapes.Shape) -> None:
    lora = flops.per_token(llama_8b, LORA_8B, "lora")
    assert flops.per_token(llama_8b, {**LORA_8B, "adapter": "qlora"}, "qlora") == lora
    full = flops.per_token(llama_8b, {"sequence_len": 4096}, None)
    assert full.adapter_params == 0
    assert full.per_token == 6 * lora.base_params + 8 * 32 * 4096 * 4096


def test_mfu_of_a_smoke_row_on_a_known_card() -> None:
    # a made-up H200 row: 8,000 tokens/s on one GPU at 35.3 GFLOP a token against 798 TFLOP/s
    row = smoke.Result("configs/lora_style_transfer.yaml", "run", 0, 60.0,
                       {"throughput_tok_s": 8000.0, "world_size": 1, "peak_vram_allocated_gib": 19.4},
                       flops_per_token=35_320_233_984, peak_tflops=798.0)
    assert row.as_dict()["mfu"] == 0.3541  # 8,000 x 35.32e9 / 798e12
    assert "| 35.4% |" in smoke.table([row])
    # two GPUs: the throughput is both cards' together, MFU is each card's
    two = smoke.Result(row.config, "run", 0, 60.0, {**row.summary, "world_size": 2},
                       flops_per_token=row.flops_per_token, peak_tflops=row.peak_tflops)
    assert two.as_dict()["mfu"] == pytest.approx(0.3541 / 2, abs=1e-4)


def test_a_cpu_row_or_an_unknown_card_shows_no_mfu() -> None:
    cpu = smoke.Result("configs/tiny_cpu.yaml", "run", 0, 9.0, {"throughput_tok_s": 19559.0, "peak_rss_gib": 0.86})
    assert cpu.as_dict()["mfu"] is None
    header, _, line = smoke.table([cpu]).splitlines()
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[header.strip("|").split("|").index(" MFU ")] == "-"


def test_a_gpu_smoke_finds_the_basis_of_its_mfu_from_the_config_and_the_card() -> None:
    tiny = config.load(ROOT / "configs" / "tiny_cpu.yaml")
    fpt, peak = smoke.mfu_basis(tiny, dict(tiny.data), {"hardware": {"accelerator": "NVIDIA H200"}})
    assert peak == 798.0
    assert fpt == flops.per_token(shapes.shape(models.architecture_config("tiny-llama")), tiny.data, "lora").per_token
    assert smoke.mfu_basis(tiny, dict(tiny.data), {"hardware": {"accelerator": "cpu"}}) == (None, None)
