"""Profile one optimizer step of a real run: where the device's time goes, kernel by kernel.

`pipeline smoke --profile-step N` sets `PIPELINE_PROFILE_STEP=N`; the metrics recorder then adds this
callback, which runs torch's profiler over optimizer step N (all its micro-batches, the optimizer step
included) and writes, next to metrics.jsonl:

- `profile.txt`: the kernels and operators by self device time (CPU time on a machine without CUDA),
  the table people read first;
- `profile.json`: the same time in coarse groups (matmul, attention, Triton kernels, elementwise,
  copies, communication, other) with each group's share of the step.

A step other than the first is the useful one: step 1 carries Triton compilation and autotuning.
Only rank 0 profiles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

#: kernel-name patterns for the groups, first match wins (names as CUDA and torch report them)
GROUPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("communication", re.compile(r"nccl|all_?reduce|all_?gather|reduce_?scatter", re.I)),
    ("attention", re.compile(r"flash|fmha|attention|sdpa|varlen", re.I)),
    ("matmul", re.compile(r"gemm|matmul|cutlass|sm90_xmma|nvjet|\bmm\b|addmm|bmm|cublas", re.I)),
    ("copies", re.compile(r"memcpy|memset|copy_|to_copy|cat", re.I)),
    ("triton", re.compile(r"triton|_kernel$|liger|lora", re.I)),
    ("elementwise", re.compile(r"elementwise|vectorized|reduce|unrolled|foreach|adam", re.I)),
)


def group_of(name: str) -> str:
    for group, pattern in GROUPS:
        if pattern.search(name):
            return group
    return "other"


def _self_time_us(event: Any, on_device: bool) -> float:
    if on_device:
        for attr in ("self_device_time_total", "self_cuda_time_total"):
            if hasattr(event, attr):
                return float(getattr(event, attr))
        return 0.0
    return float(event.self_cpu_time_total)


def grouped(events: list[tuple[str, float]]) -> dict[str, Any]:
    """{group: {"ms": ..., "share": ...}} over (name, self time in microseconds) pairs."""
    totals: dict[str, float] = {}
    for name, us in events:
        totals[group_of(name)] = totals.get(group_of(name), 0.0) + us
    whole = sum(totals.values()) or 1.0
    return {g: {"ms": round(us / 1000, 2), "share": round(us / whole, 4)}
            for g, us in sorted(totals.items(), key=lambda kv: -kv[1])}


class StepProfiler(TrainerCallback):
    def __init__(self, step: int, out_dir: Path) -> None:
        self.step = max(1, step)
        self.out_dir = out_dir
        self.prof: Any = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step + 1 != self.step or self.prof is not None:
            return
        import torch
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
            torch.cuda.synchronize()
        self.prof = profile(activities=activities, record_shapes=False)
        self.prof.__enter__()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.prof is None or state.global_step != self.step:
            return
        import torch

        on_device = torch.cuda.is_available()
        if on_device:
            torch.cuda.synchronize()
        prof, self.prof = self.prof, None
        prof.__exit__(None, None, None)
        averages = prof.key_averages()
        sort_by = "self_cuda_time_total" if on_device else "self_cpu_time_total"
        try:
            table = averages.table(sort_by=sort_by, row_limit=40, max_name_column_width=90)
        except (AttributeError, KeyError):  # newer torch names it device time
            table = averages.table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=90)
        # on a GPU both an operator (aten::mm) and the kernel it launched report the kernel's time as
        # "self" device time: count kernels only, or every matmul is counted twice
        if on_device:
            from torch.autograd import DeviceType

            events = [(e.key, _self_time_us(e, True)) for e in averages if e.device_type == DeviceType.CUDA]
        else:
            events = [(e.key, _self_time_us(e, False)) for e in averages]
        events = [(k, us) for k, us in events if us > 0]
        payload = {"step": self.step, "clock": "device" if on_device else "cpu",
                   "total_ms": round(sum(us for _, us in events) / 1000, 2), "groups": grouped(events)}
        (self.out_dir / "profile.txt").write_text(f"optimizer step {self.step}\n{table}\n")
        (self.out_dir / "profile.json").write_text(json.dumps(payload, indent=2) + "\n")
