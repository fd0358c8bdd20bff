"""Where a run happens, which decides some rules: a CPU, a named card, or the GPU in this machine.

`--device cpu` or `--device gpu` says it. Without it (`auto`, what smoke and train use) a config on
`pipeline://tiny-llama` or `pipeline://smollm2-135m-instruct` is checked for a CPU when CUDA does not
answer here (the project's CPU configs), and any other model for a GPU: the card here if CUDA answers,
else one named with `--gpu`, else an unknown card (bf16 support is not judged).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pipeline.core import cards, models
from pipeline.core.config import LoadedConfig


@dataclass
class Target:
    """The device a config is checked for."""

    device: str  # "cpu" or "gpu"
    gpu: str | None = None
    capability: tuple[int, int] | None = None
    memory_gib: float | None = None
    why: str = ""

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
        return f"{card} ({self.why})"

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "gpu": self.gpu, "compute_capability": self.capability,
                "memory_gib": self.memory_gib, "why": self.why}



def _local_cuda() -> tuple[str, tuple[int, int]] | None:
    """The first visible GPU's name and compute capability, or None.

    Asked of NVML rather than torch: importing torch and starting CUDA in the launching process costs
    seconds, which axolotl's own process pays again (see benchmarks/README.md). torch answers only where
    pynvml is not installed, on a ROCm machine (no NVIDIA driver, /dev/kfd present), or for a device NVML
    cannot describe.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return None
    try:
        import pynvml
    except ImportError:
        return _torch_cuda()
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVIDIA driver here; torch could still see a ROCm GPU
        return _torch_cuda() if os.path.exists("/dev/kfd") else None
    try:
        first = (visible or "0").split(",")[0].strip()
        handle = (pynvml.nvmlDeviceGetHandleByIndex(int(first)) if first.isdigit()
                  else pynvml.nvmlDeviceGetHandleByUUID(first))
        name = pynvml.nvmlDeviceGetName(handle)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return (name.decode() if isinstance(name, bytes) else str(name)), (int(major), int(minor))
    except Exception:  # noqa: BLE001 - a device NVML cannot describe: ask torch
        return _torch_cuda()
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass



def cuda_answers() -> bool:
    """Whether a CUDA GPU is visible here: asked of the NVIDIA driver's own library where there is one, else
    of torch (ROCm, or no NVIDIA driver). False where CUDA_VISIBLE_DEVICES is empty or -1. The driver
    answers far sooner than an import of torch (see benchmarks/README.md), and a smoke that fails early
    (a model that is not there) spends most of its time on this question otherwise."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    count = _nvml_count()
    if count is not None:
        return count > 0
    import torch

    return bool(torch.cuda.is_available())


def _nvml_count() -> int | None:
    """GPUs the NVIDIA driver reports through libnvidia-ml (no pynvml needed), or None without a driver."""
    import ctypes

    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint(0)
        return int(count.value) if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0 else None
    finally:
        nvml.nvmlShutdown()


def _torch_cuda() -> tuple[str, tuple[int, int]] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0))  # type: ignore[return-value]



def target_for(loaded: LoadedConfig, device: str = "auto", gpu: str | None = None,
               gpu_mem_gib: float | None = None) -> Target:
    """The device to check a config for (the rule is in the module docstring)."""
    if device == "cpu":
        return Target("cpu", why="--device cpu")
    local = _local_cuda()
    if device == "auto" and gpu is None and local is None and \
            str(loaded.data.get("base_model", "")).startswith(tuple(models.SCHEME + n for n in models.CPU_MODELS)):
        return Target("cpu", why="a CPU-sized model with no CUDA here")
    if gpu is not None:
        return Target("gpu", gpu, cards.gpu_capability(gpu), gpu_mem_gib, why="--gpu")
    if local is not None:
        return Target("gpu", local[0], local[1], gpu_mem_gib, why="the GPU here")
    return Target("gpu", None, None, gpu_mem_gib, why="a GPU config; name the card with --gpu to check bf16")
