"""An axolotl plugin that records where a run's allocated GPU memory stands at each phase of a step.

benchmarks/memory.py adds it to every measured row (`--set plugins=[..., benchmarks.memory_probe.MemoryProbe]`)
and names the file to write in `PIPELINE_MEMORY_PROBE`. It only reads CUDA's counters, never resets them,
so the run's own whole-run peak (the recorder's) is unchanged. Records, one JSON object a line:

    {"at": "train_begin", "alloc": ..., "max": ...}      weights (and adapter) as loaded; max: the load's peak
    {"at": "forward_end", "step": s, "alloc": ...}       every micro-batch: what the forward pass kept
    {"at": "pre_optimizer", "step": s, "alloc": ..., "max": ...}   gradients present; max: this step's
                                                                    forward/backward peak (axolotl resets the
                                                                    peak at every log, i.e. every step)
    {"at": "optimizer", "step": s, "alloc": ..., "max": ...}       states present; max: with the step's
    {"at": "step_end", "step": s, "alloc": ..., "max": ...}

All figures in GiB. With `logging_steps: 1` (the runs' default) the peak counter is reset at each log, so
`max` at `pre_optimizer` of step 2 is the forward/backward peak with the optimizer state allocated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

ENV = "PIPELINE_MEMORY_PROBE"
GIB = 2**30


class _Probe(TrainerCallback):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.step = 0

    def write(self, at: str, *, peak: bool = True) -> None:
        import torch

        if not torch.cuda.is_available():
            return
        torch.cuda.synchronize()
        record: dict[str, Any] = {"at": at, "step": self.step,
                                  "alloc": round(torch.cuda.memory_allocated() / GIB, 4)}
        if peak:
            record["max"] = round(torch.cuda.max_memory_allocated() / GIB, 4)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.write("train_begin")

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step = state.global_step + 1
        self.write("step_begin")

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.write("pre_optimizer")

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.write("optimizer")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.write("step_end")


class MemoryProbe(BasePlugin):
    """Active when `PIPELINE_MEMORY_PROBE` names a file; adds the callback and a forward hook on the model."""

    def add_callbacks_pre_trainer(self, cfg: Any, model: Any) -> list[Any]:
        target = os.environ.get(ENV)
        if not target:
            return []
        probe = _Probe(Path(target))
        # the end of the whole model's forward: the loss is computed, nothing of the backward has run
        model.register_forward_hook(lambda module, inputs, output: probe.write("forward_end", peak=False)
                                    if module.training else None)
        return [probe]
