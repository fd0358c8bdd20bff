"""The per-rank peak under FSDP: the one-GPU estimate (`estimate.peak_vram`) with what FSDP shards divided
over the ranks, and what it gathers added back.

What FSDP (axolotl's `fsdp_config`, `fsdp_version: 2`: torch's fully_shard on every decoder layer, then on
the model) does to each part of the one-GPU estimate, over R ranks (GPUs per node x nodes):

    weights              each rank keeps 1/R of every weight (QLoRA: of the NF4 weights and the bf16 rest)
    gathered             the root unit (embeddings, output embedding, final norm) stays gathered through the
                         forward and backward (FSDP2 does not reshard the root after forward), and one decoder
                         layer is gathered while the next is prefetched: the root's and two layers' weights,
                         less the shard of them each rank holds already; with `reshard_after_forward: false`
                         every layer stays gathered from its forward to its backward
    trainable+optimizer  trained weights, their gradients and the optimizer's moments: 1/R each (the CUDA
                         libraries' workspaces stay whole); a full fine-tune adds one layer's gradients in
                         full before they are reduce-scattered
    activations, loss    unchanged: every rank runs its own micro-batches
    optimizer step       the step's temporary, 1/R

`offload_params: true` keeps weights and optimizer state in CPU memory: only what is gathered counts.
Loading: for QLoRA axolotl places the whole quantised model on each rank's GPU before sharding (it sets
`device_map` to the local rank: loaders/model.py, `_set_device_map_config`), so a QLoRA rank must hold the
one-GPU loading moment; LoRA and full fine-tunes load on the CPU and are sharded as they move.
These are derived, not yet measured (tests/e2e/test_multi_gpu.py holds the measurement to 10%).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pipeline.checks.estimate import GIB, NF4_BYTES_PER_PARAM, WORKSPACES, Estimate, peak_vram
from pipeline.checks.shapes import Shape


def fsdp_of(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The config's FSDP settings (`fsdp_config`, or the deprecated `fsdp` list), None without FSDP."""
    fc = cfg.get("fsdp_config")
    if isinstance(fc, Mapping) and fc:
        return {str(k).removeprefix("fsdp_"): v for k, v in fc.items()}
    if cfg.get("fsdp"):
        return {}
    return None


def layer_bytes(s: Shape, adapter: str) -> tuple[float, float]:
    """(one decoder layer's weights, the root unit's weights) in bytes, as FSDP holds them."""
    in_layer = {n: p for n, p in s.module_params.items() if ".layers.0." in n}
    linear = sum(lin.numel for lin in s.linears if ".layers.0." in lin.name)
    other = sum(in_layer.values()) - linear
    if adapter == "qlora":
        layer = linear * NF4_BYTES_PER_PARAM + other * 2.0
    elif adapter == "full":
        layer = linear * 2.0 + other * 4.0
    else:
        layer = (linear + other) * 2.0
    root_params = max(0, s.total_params - s.layers * sum(in_layer.values()))
    return layer, root_params * (4.0 if adapter == "full" else 2.0)


def per_rank(s: Shape, cfg: Mapping[str, Any], adapter: str, tokens: int, ranks: int) -> Estimate:
    """The allocated-memory peak of one rank of an FSDP run over `ranks` ranks (GiB by part)."""
    one = peak_vram(s, cfg, adapter, tokens)
    if ranks <= 1:
        return one
    fsdp = fsdp_of(cfg) or {}
    layer, root = layer_bytes(s, one.adapter)
    parts = dict(one.parts)
    weights = parts.pop("weights") * GIB
    state = parts.pop("trainable+optimizer") * GIB - WORKSPACES
    keep_gathered = fsdp.get("reshard_after_forward") is False
    held_layers = s.layers if keep_gathered else min(2, s.layers)
    gathered = (root + held_layers * layer) * (1 - 1 / ranks)
    if fsdp.get("offload_params"):
        out = {"weights (gathered)": (root + held_layers * layer) / GIB,
               "trainable+optimizer": WORKSPACES / GIB}
    else:
        out = {"weights (shard)": weights / ranks / GIB, "weights (gathered)": gathered / GIB,
               "trainable+optimizer": (state / ranks + WORKSPACES) / GIB}
    if one.adapter == "full":
        out["trainable+optimizer"] += layer / GIB  # one layer's full gradients before the reduce-scatter
    if "optimizer step" in parts:
        parts["optimizer step"] /= ranks
    out.update(parts)
    loading = one.loading_gib if one.adapter == "qlora" else 0.0
    return replace(one, parts=out, loading_gib=loading)
