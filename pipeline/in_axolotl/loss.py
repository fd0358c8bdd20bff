"""An axolotl plugin that weights the training loss per token across gradient accumulation.

The contract: with this plugin listed, one optimizer step's loss is the sum of the cross-entropy over every
trainable token of the whole global batch (all micro batches of the accumulation, on every rank) divided once
by the number of those tokens. How a global batch is split into micro batch x accumulation (x ranks) then does
not change what is trained, up to floating-point rounding: a 24 GiB card at 1 x 4 and an 80 GiB card at 4 x 1
take the same steps.

Why a plugin is needed: transformers' Trainer already computes exactly that (`num_items_in_batch`: the count of
trainable tokens over the accumulated batch, passed into the model's loss, which then sums instead of averaging)
whenever `trainer.model_accepts_loss_kwargs` is set. Axolotl 0.19's trainer (`AxolotlTrainer.__init__`,
core/trainers/base.py) clears that flag unless the inner model's `forward` names `num_items_in_batch`, which
Llama's (and most causal LMs') do not: they take it through `**kwargs` and hand it to `self.loss_function`. The
loss is then a mean per micro batch, averaged over accumulation, so a token's weight depends on how many
trainable tokens share its micro batch.

`post_trainer_create` sets the flag back where the model's loss really consumes the count: its forward names
`num_items_in_batch` (Liger's fused linear cross-entropy forward does), or takes `**kwargs` and passes them to
`loss_function` (transformers' causal LMs). A forward that takes `**kwargs` for other reasons (some multimodal
models) would see the count and ignore it, which would scale the gradient by the accumulation; there the plugin
leaves axolotl's weighting and records why.

Several ranks: the plugin also sets `average_tokens_across_devices`, so the count is the sum over every rank
(an all-gather of each rank's count) and each rank's loss is multiplied by the number of processes, which the
gradient all-reduce's mean divides out again: each token weighs 1 / (trainable tokens of the global batch) on
every rank. Without it each rank would divide by its own count, and a rank holding fewer tokens would weigh each
of them more.

What it did is appended to the run's metrics file as one record:
    {"kind": "loss_weighting", "weighting": "per-token" | "per-micro-batch", "world_size": N, "why": "..."}
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import Any

from axolotl.integrations.base import BasePlugin

from pipeline.in_axolotl import METRICS_ENV

#: `self.loss_function(..., **kwargs)` (transformers' causal LMs), or Liger's fused linear cross-entropy call
#: (`lce_maybe_trainable_lm_head(..., **kwargs)`): a forward that hands its keyword arguments to the loss
_LOSS_GETS_KWARGS = re.compile(
    r"(?:loss_function|LigerForCausalLMLoss|lce_maybe_trainable_lm_head)\([^;]{0,400}?\*\*kwargs", re.S)


def _inner_model(model: Any) -> Any:
    """The model whose forward computes the loss: through accelerate's, DDP's and PEFT's wrappers."""
    for _ in range(8):  # wrappers nest a few deep; a cycle of them must not loop for ever
        if hasattr(model, "module") and not hasattr(model, "loss_function"):  # DDP / FSDP wrapper
            model = model.module
        elif hasattr(model, "get_base_model"):  # PeftModel
            model = model.get_base_model()
        else:
            break
    return model


def consumes_item_count(model: Any) -> tuple[bool, str]:
    """Whether `model`'s forward passes transformers' `num_items_in_batch` on to its loss, and how it was told."""
    forward = getattr(model, "forward", None)
    if forward is None:
        return False, "the model has no forward"
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False, "the model's forward has no readable signature"
    if "num_items_in_batch" in params:
        return True, f"{type(model).__name__}.forward takes num_items_in_batch"
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return False, f"{type(model).__name__}.forward takes no num_items_in_batch"
    try:
        source = inspect.getsource(forward)
    except (OSError, TypeError):
        return False, f"{type(model).__name__}.forward's source is not readable, so its loss's use of **kwargs is unknown"
    if _LOSS_GETS_KWARGS.search(source):
        return True, f"{type(model).__name__}.forward hands **kwargs to its loss_function"
    return False, f"{type(model).__name__}.forward takes **kwargs but does not hand them to a loss_function"


def apply(trainer: Any) -> dict[str, Any]:
    """Switch `trainer` to the per-token loss where its model's loss consumes the token count; the record."""
    world = int(getattr(trainer.args, "world_size", 1) or 1)
    if getattr(trainer, "compute_loss_func", None) is not None:
        ok, why = True, "the trainer's compute_loss_func receives num_items_in_batch"
    else:
        ok, why = consumes_item_count(_inner_model(trainer.accelerator.unwrap_model(trainer.model)))
    if ok:
        trainer.model_accepts_loss_kwargs = True
        if world > 1:
            trainer.args.average_tokens_across_devices = True
    return {"kind": "loss_weighting", "weighting": "per-token" if ok else "per-micro-batch", "world_size": world,
            "why": why}


class TokenWeightedLoss(BasePlugin):
    """Listed in a run's config.yaml unless `pipeline.loss_weighting: per-micro-batch` asks for axolotl's own."""

    def post_trainer_create(self, cfg: Any, trainer: Any) -> None:
        record = apply(trainer)
        target = os.environ.get(METRICS_ENV)
        if target and int(os.environ.get("RANK", "0")) == 0:
            with Path(target).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
