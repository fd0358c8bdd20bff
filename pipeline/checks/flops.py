"""Model FLOPs per trained token and model FLOPs utilisation (MFU): how far a run's throughput is from the
card's dense bf16 ceiling (`pipeline.core.cards.dense_bf16_tflops`).

Model FLOPs per token, recomputation not counted (a checkpointed layer's second forward is work the card does
but not work the training needs):

      4 * N_base       forward and input-gradient matmuls of the frozen base (no weight gradients)
    + 6 * N_adapter    forward, input and weight gradients of the LoRA matrices
    + 8 * L * S * d    attention scores and values at sequence length S, forward and backward

N_base is every linear layer of the model (embeddings excluded, the output projection included), N_adapter
what LoRA trains (`trained.trainable`), L the decoder layers, S `sequence_len` (packed sequences fill it),
d the attention's query width (heads x head_dim: the hidden size in most models). A full fine-tune trains
every base weight: 6 * N_base. Copies that `lora_modules_to_save` trains are counted as frozen base.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.checks import trained
from pipeline.checks.shapes import Shape


@dataclass(frozen=True)
class Flops:
    per_token: int
    #: parameters of the base's linear layers, and of the LoRA matrices (0 for a full fine-tune)
    base_params: int
    adapter_params: int


def per_token(s: Shape, cfg: Mapping[str, Any], adapter: str | None) -> Flops:
    """Model FLOPs of one trained token of `cfg` (`adapter`: "lora", "qlora", or None/"full" for every weight).

    Raises:
        ValueError: `sequence_len` is not a positive whole number.
    """
    seq = int(cfg.get("sequence_len") or 2048)  # axolotl's default
    if seq <= 0:
        raise ValueError(f"sequence_len {seq} is not positive")
    n_base = sum(lin.numel for lin in s.linears)
    attention = 8 * s.layers * seq * (s.q_dim or s.hidden)
    if adapter in ("lora", "qlora"):
        n_adapter = trained.trainable(s, cfg).lora
        return Flops(4 * n_base + 6 * n_adapter + attention, n_base, n_adapter)
    return Flops(6 * n_base + attention, n_base, 0)


def mfu(tokens_per_s_per_gpu: float, flops_per_token: float, peak_tflops: float) -> float:
    """The fraction of the card's ceiling (`peak_tflops`, TFLOP/s) one GPU's throughput uses."""
    return tokens_per_s_per_gpu * flops_per_token / (peak_tflops * 1e12)
