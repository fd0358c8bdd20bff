"""The estimate: parameter counts read off the meta-device model, checked against peft itself, and the
peak-VRAM model against the two peaks measured on an H100 (shared/facts/VERIFIED.md)."""

from __future__ import annotations

import pytest

from pipeline.checks import estimate, shapes, trained
from pipeline.core import models

LLAMA_8B = "meta-llama/Llama-3.1-8B"
SEED_RUN = {"lora_r": 64, "lora_target_linear": True, "gradient_checkpointing": True,
            "gradient_accumulation_steps": 4, "optimizer": "adamw_torch", "micro_batch_size": 1}


@pytest.fixture(scope="module")
def llama8b() -> shapes.Shape:
    return shapes.shape(models.architecture_config(LLAMA_8B), cache=False)


@pytest.fixture(scope="module")
def tiny() -> shapes.Shape:
    return shapes.shape(models.architecture_config("tiny-llama"), cache=False)


def test_llama8b_shape(llama8b: shapes.Shape) -> None:
    assert llama8b.total_params == 8_030_261_248
    assert (llama8b.input_embedding, llama8b.output_embedding) == ("model.embed_tokens", "lm_head")
    assert (llama8b.hidden, llama8b.layers, llama8b.vocab) == (4096, 32, 128_256)


def test_seed_lora_r64_all_linear(llama8b: shapes.Shape) -> None:
    assert trained.trainable(llama8b, SEED_RUN).lora == 167_772_160


def test_seed_modules_to_save_adds_embeddings(llama8b: shapes.Shape) -> None:
    added, missing = trained.modules_to_save(llama8b, {"lora_modules_to_save": ["embed_tokens", "lm_head"]})
    assert added == {"embed_tokens": 128_256 * 4096, "lm_head": 128_256 * 4096}
    assert sum(added.values()) == 1_050_673_152 and missing == []


@pytest.mark.parametrize("cfg", [
    {"lora_r": 8, "lora_target_linear": True},
    {"lora_r": 4, "lora_target_modules": ["q_proj", "v_proj"]},
    {"lora_r": 16, "lora_target_modules": r".*\.mlp\.(gate|up)_proj"},
    {"lora_r": 8, "lora_target_modules": ["o_proj"], "lora_modules_to_save": ["embed_tokens", "lm_head"]},
    {"lora_r": 8},  # nothing named: peft's default targets for llama
    {"lora_r": 8, "lora_target_modules": ["q_proj", "down_proj"], "peft_layers_to_transform": [1]},
    {"lora_r": 8, "lora_target_modules": ["q_proj", "v_proj"], "peft_layers_to_transform": 0},
    {"lora_r": 8, "lora_target_linear": True, "peft_use_dora": True},  # and a magnitude vector per target
])
def test_counts_match_peft(tiny: shapes.Shape, cfg: dict) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = models.architecture_config("tiny-llama")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            AutoConfig.for_model(**{k: v for k, v in raw.items() if k != "architectures"}))
    targets = cfg.get("lora_target_modules")
    if cfg.get("lora_target_linear"):
        targets = "all-linear"
    peft_model = get_peft_model(model, LoraConfig(r=cfg["lora_r"], target_modules=targets,
                                                  modules_to_save=cfg.get("lora_modules_to_save"),
                                                  layers_to_transform=cfg.get("peft_layers_to_transform"),
                                                  use_dora=bool(cfg.get("peft_use_dora"))))
    expected = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trained.trainable(tiny, cfg).total == expected


def test_target_typo_is_reported(tiny: shapes.Shape) -> None:
    _, missing = trained.lora_targets(tiny, {"lora_target_modules": ["q_proj", "v_projj"]})
    assert missing == ["v_projj"]
    assert trained.lora_targets(tiny, {"lora_target_modules": "nothing_matches"})[1] == ["nothing_matches"]


# Measured on an H100 80GB HBM3, one run each (VERIFIED.md): 8B shape, seq 4096, packing, mbs 1, GA 4,
# r64 all-linear, adamw_torch, gradient checkpointing.
@pytest.mark.parametrize(("adapter", "measured_gib"), [("lora", 24.46), ("qlora", 14.83)])
def test_peak_close_to_measured(llama8b: shapes.Shape, adapter: str, measured_gib: float) -> None:
    est = estimate.peak_vram(llama8b, SEED_RUN, adapter, tokens=4096)
    assert abs(est.peak_gib - measured_gib) / measured_gib < 0.03, est.as_dict()


def test_memory_grows_with_what_it_should(llama8b: shapes.Shape) -> None:
    base = estimate.peak_vram(llama8b, SEED_RUN, "lora", 4096).peak_gib
    assert estimate.peak_vram(llama8b, SEED_RUN, "lora", 8192).peak_gib > base
    no_ckpt = {**SEED_RUN, "gradient_checkpointing": False}
    assert estimate.peak_vram(llama8b, no_ckpt, "lora", 4096).peak_gib > base + 10
    saved = {**SEED_RUN, "lora_modules_to_save": ["embed_tokens", "lm_head"]}
    assert estimate.peak_vram(llama8b, saved, "lora", 4096).peak_gib > base + 5
    eight_bit = {**SEED_RUN, "optimizer": "adamw_bnb_8bit"}
    assert estimate.peak_vram(llama8b, eight_bit, "lora", 4096).peak_gib < base
    full = estimate.peak_vram(llama8b, SEED_RUN, "full", 4096)
    assert full.peak_gib > 3 * base and full.loading_gib == 0


def test_full_fine_tune_keeps_embeddings_fp32_and_adamw_moments_in_the_weights_dtype(llama8b: shapes.Shape) -> None:
    """bf16 weights, gradients and moments except the embeddings and norms, which axolotl keeps in fp32."""
    est = estimate.peak_vram(llama8b, SEED_RUN, "full", 4096)
    fp32 = 2 * 128_256 * 4096 + 65 * 4096
    weights = (llama8b.total_params - fp32) * 2 + fp32 * 4
    assert est.parts["weights"] == pytest.approx(weights / 2**30)
    # gradients as the weights, two moments, and the CUDA libraries' workspaces
    assert est.parts["trainable+optimizer"] == pytest.approx((3 * weights + estimate.WORKSPACES) / 2**30)


def test_cached_shape_is_the_built_one(tmp_path, monkeypatch, llama8b: shapes.Shape) -> None:
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path))
    arch = models.architecture_config(LLAMA_8B)
    first = shapes.shape(arch)  # builds and writes
    assert list((tmp_path / "shapes").glob("*.json"))
    assert shapes.shape(arch) == first == llama8b  # read back
