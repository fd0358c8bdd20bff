"""The GPUs this process may use: the one module that asks the machine, so every caller sees the same ones.

The check's target, `pipeline.compute: fastest`'s card, `--gpus`, the hardware a manifest records and the
card whose ceiling the smoke's MFU divides by all ask here. They see the GPUs CUDA_VISIBLE_DEVICES leaves
visible, in its order (each entry an index or a UUID), and none where it is empty or -1.

NVML (the NVIDIA driver's library, through pynvml) is asked rather than torch: importing torch and
starting CUDA in the launching process costs seconds, which axolotl's own process pays again (see
benchmarks/README.md). torch answers only where pynvml is not installed, on a ROCm machine (no NVIDIA
driver, /dev/kfd present), or for a device NVML cannot describe. Whether any GPU answers at all is asked of
libnvidia-ml directly (`cuda_answers`), which needs no pynvml and is the quickest question.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Gpu:
    """One visible GPU as the driver (or torch) describes it."""

    name: str
    memory_bytes: int | None = None
    capability: tuple[int, int] | None = None
    driver: str | None = None

    @property
    def memory_gib(self) -> float | None:
        return None if self.memory_bytes is None else self.memory_bytes / GIB


def visible_entries() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of entries ([] where it hides every GPU), or None where it is unset."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    if visible.strip() in ("", "-1"):
        return []
    return [d.strip() for d in visible.split(",") if d.strip()]


def devices(limit: int | None = None) -> list[Gpu]:
    """The visible GPUs (the first `limit` of them), described by NVML, else by torch ([] where there are none).

    Without an NVIDIA driver torch is asked only where a ROCm device (/dev/kfd) could answer, so a machine
    with no GPU at all never imports torch for this."""
    entries = visible_entries()
    if entries == []:
        return []
    try:
        import pynvml
    except ImportError:
        return _torch_devices(limit)
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVIDIA driver here; torch could still see a ROCm GPU
        return _torch_devices(limit) if os.path.exists("/dev/kfd") else []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        wanted = entries if entries is not None else [str(i) for i in range(int(pynvml.nvmlDeviceGetCount()))]
        out = []
        for entry in wanted[:limit]:
            handle = (pynvml.nvmlDeviceGetHandleByIndex(int(entry)) if entry.isdigit()
                      else pynvml.nvmlDeviceGetHandleByUUID(entry))
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            out.append(Gpu(_text(pynvml.nvmlDeviceGetName(handle)), int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                           (int(major), int(minor)), driver))
        return out
    except Exception:  # noqa: BLE001 - a device NVML cannot describe: ask torch
        return _torch_devices(limit)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def first() -> Gpu | None:
    """The first visible GPU (the one a one-process run uses), or None."""
    found = devices(limit=1)
    return found[0] if found else None


def count() -> int:
    """How many GPUs a run here can use: NVML's count narrowed by CUDA_VISIBLE_DEVICES, else torch's."""
    entries = visible_entries()
    if entries == []:
        return 0
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            found = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVIDIA driver (or no pynvml): ask torch, which also sees ROCm
        import torch

        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return found if entries is None else min(found, len(entries))


def cuda_answers() -> bool:
    """Whether a CUDA GPU is visible here: asked of the NVIDIA driver's own library where there is one, else
    of torch (ROCm, or no NVIDIA driver). False where CUDA_VISIBLE_DEVICES is empty or -1. The driver
    answers far sooner than an import of torch (see benchmarks/README.md), and a smoke that fails early
    (a model that is not there) spends most of its time on this question otherwise."""
    if visible_entries() == []:
        return False
    found = _driver_count()
    if found is not None:
        return found > 0
    import torch

    return bool(torch.cuda.is_available())


def _driver_count() -> int | None:
    """GPUs the NVIDIA driver reports through libnvidia-ml (no pynvml needed), or None without a driver."""
    import ctypes

    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        found = ctypes.c_uint(0)
        return int(found.value) if nvml.nvmlDeviceGetCount_v2(ctypes.byref(found)) == 0 else None
    finally:
        nvml.nvmlShutdown()


def _torch_devices(limit: int | None) -> list[Gpu]:
    """torch's view: it numbers the visible devices from 0 itself."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count())[:limit]:
        props = torch.cuda.get_device_properties(i)
        out.append(Gpu(str(props.name), int(props.total_memory), (int(props.major), int(props.minor))))
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
