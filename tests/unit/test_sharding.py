"""The per-rank peak under FSDP (pipeline.checks.sharding) and the advice it gives for several ranks."""

from __future__ import annotations

import pytest

from pipeline.checks import estimate, memory, shapes, sharding
from pipeline.core import models

FSDP = {"fsdp_version": 2, "fsdp_config": {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                           "transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                                           "reshard_after_forward": True}}
#: a long-context 70B QLoRA: r 64 on every linear layer, 16,384 tokens a micro-batch, checkpointing
QLORA_70B = {"adapter": "qlora", "load_in_4bit": True, "lora_r": 64, "lora_target_linear": True,
             "gradient_checkpointing": True, "optimizer": "adamw_torch", "micro_batch_size": 1,
             "sequence_len": 16384, "sample_packing": True, **FSDP}
TOKENS = 16384


@pytest.fixture(scope="module")
def llama70b() -> shapes.Shape:
    return shapes.shape(models.architecture_config("llama-3.1-70b"))


def test_one_rank_is_the_one_gpu_estimate(llama70b):
    one = estimate.peak_vram(llama70b, QLORA_70B, "qlora", TOKENS)
    assert sharding.per_rank(llama70b, QLORA_70B, "qlora", TOKENS, 1) == one


def test_sharding_divides_weights_and_state_and_keeps_activations(llama70b):
    one = estimate.peak_vram(llama70b, QLORA_70B, "qlora", TOKENS)
    two = sharding.per_rank(llama70b, QLORA_70B, "qlora", TOKENS, 2)
    assert two.parts["weights (shard)"] == pytest.approx(one.parts["weights"] / 2)
    ws = estimate.WORKSPACES / estimate.GIB
    assert two.parts["trainable+optimizer"] == pytest.approx((one.parts["trainable+optimizer"] - ws) / 2 + ws)
    assert two.parts["checkpoints"] == one.parts["checkpoints"] and two.parts["loss"] == one.parts["loss"]
    layer, root = sharding.layer_bytes(llama70b, "qlora")
    assert two.parts["weights (gathered)"] == pytest.approx((root + 2 * layer) / 2 / estimate.GIB)
    # the root unit: both embeddings of a 128,256 x 8,192 untied model, bf16, and the final norm
    assert root == 2 * (2 * 128_256 * 8_192 + 8_192)
    # QLoRA loads the whole quantised model on each rank before sharding
    assert two.loading_gib == one.loading_gib


def test_a_70b_qlora_fits_no_80gib_card_but_fits_sharded_over_two(llama70b):
    one = estimate.peak_vram(llama70b, QLORA_70B, "qlora", TOKENS)
    two = sharding.per_rank(llama70b, QLORA_70B, "qlora", TOKENS, 2)
    assert not memory.fits(one, 80.0) and memory.fits(two, 80.0)
    said = memory.sharded_advice(llama70b, QLORA_70B, "qlora", TOKENS, 2, 80.0)
    assert said.startswith("QLoRA fits no single 80 GiB card (~92.9 GiB) but fits sharded over 2 ranks (~70.7 GiB")


def test_a_70b_full_fine_tune_fits_neither_one_card_nor_two(llama70b):
    cfg = {k: v for k, v in QLORA_70B.items() if k not in ("adapter", "load_in_4bit")}
    one = estimate.peak_vram(llama70b, cfg, "full", TOKENS)
    two = sharding.per_rank(llama70b, cfg, "full", TOKENS, 2)
    assert not memory.fits(one, 80.0) and not memory.fits(two, 80.0)
    said = memory.sharded_advice(llama70b, cfg, "full", TOKENS, 2, 80.0)
    assert said.startswith(f"a full fine-tune fits neither one 80 GiB card (~{one.needs_gib:.1f} GiB) nor sharded "
                           f"over 2 ranks (~{two.needs_gib:.1f} GiB per rank)"), said


def test_without_fsdp_the_advice_says_how_to_shard(llama70b):
    plain = {k: v for k, v in QLORA_70B.items() if k not in FSDP}
    said = memory.sharded_advice(llama70b, plain, "qlora", TOKENS, 2, 80.0)
    assert said.endswith("set fsdp_version: 2 and an fsdp_config to shard it")


def test_offloading_keeps_only_what_is_gathered_on_the_gpu(llama70b):
    cfg = {**QLORA_70B, "fsdp_config": {**FSDP["fsdp_config"], "offload_params": True}}
    e = sharding.per_rank(llama70b, cfg, "qlora", TOKENS, 2)
    assert "weights (shard)" not in e.parts and e.parts["trainable+optimizer"] == pytest.approx(
        estimate.WORKSPACES / estimate.GIB)


def test_fsdp_settings_are_read_with_or_without_the_old_prefix():
    assert sharding.fsdp_of({}) is None
    assert sharding.fsdp_of({"fsdp_config": {"fsdp_offload_params": True}}) == {"offload_params": True}
    assert sharding.fsdp_of({"fsdp": ["full_shard"]}) == {}
