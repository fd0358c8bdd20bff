"""Where a run happens, which decides some rules: a CPU, a named card, or the GPU in this machine.

`--device cpu` or `--device gpu` says it. Without it (`auto`, what smoke and train use) a config on
`pipeline://tiny-llama` or `pipeline://smollm2-135m-instruct` is checked for a CPU when CUDA does not
answer here (the project's CPU configs), and any other model for a GPU: the card here if CUDA answers,
else one named with `--gpu`, else an unknown card (bf16 support is not judged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core import cards, gpus, models
from pipeline.core.config import LoadedConfig


@dataclass
class Target:
    """The device a config is checked for."""

    device: str  # "cpu" or "gpu"
    gpu: str | None = None
    capability: tuple[int, int] | None = None
    memory_gib: float | None = None
    why: str = ""
    #: processes (GPUs) per node and nodes: the ranks FSDP shards over (pipeline check --gpus --nnodes)
    gpus: int = 1
    nnodes: int = 1

    @property
    def ranks(self) -> int:
        return max(1, self.gpus) * max(1, self.nnodes)

    @property
    def bf16(self) -> bool | None:
        return None if self.capability is None else self.capability >= (8, 0)

    def describe(self) -> str:
        if self.device == "cpu":
            return f"CPU ({self.why})"
        card = self.gpu or "unknown GPU"
        if self.capability:
            card += f" (sm_{self.capability[0]}{self.capability[1]})"
        if self.memory_gib:
            card += f", {self.memory_gib:g} GiB"
        if self.ranks > 1:
            card = f"{self.nnodes} x {self.gpus} x " + card if self.nnodes > 1 else f"{self.gpus} x " + card
        return f"{card} ({self.why})"

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "gpu": self.gpu, "compute_capability": self.capability,
                "memory_gib": self.memory_gib, "why": self.why, "gpus": self.gpus, "nnodes": self.nnodes}



def target_for(loaded: LoadedConfig, device: str = "auto", gpu: str | None = None,
               gpu_mem_gib: float | None = None) -> Target:
    """The device to check a config for (the rule is in the module docstring)."""
    if device == "cpu":
        return Target("cpu", why="--device cpu")
    here = gpus.first()
    local = None if here is None or here.capability is None else (here.name, here.capability)
    if device == "auto" and gpu is None and local is None and \
            str(loaded.data.get("base_model", "")).startswith(tuple(models.SCHEME + n for n in models.CPU_MODELS)):
        return Target("cpu", why="a CPU-sized model with no CUDA here")
    if gpu is not None:
        return Target("gpu", gpu, cards.gpu_capability(gpu), gpu_mem_gib, why="--gpu")
    if local is not None:
        return Target("gpu", local[0], local[1], gpu_mem_gib, why="the GPU here")
    return Target("gpu", None, None, gpu_mem_gib, why="a GPU config; name the card with --gpu to check bf16")
