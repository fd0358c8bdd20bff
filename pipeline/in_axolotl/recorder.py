"""The metrics recorder: an axolotl plugin that writes every logged step to the run's metrics.jsonl.

The resolved config lists `pipeline.in_axolotl.recorder.MetricsRecorder` under `plugins:`, and the launcher
passes the file to write in `PIPELINE_METRICS_FILE`. Records, one JSON object a line:

    {"kind": "start", "trainable_params": ..., "total_params": ..., "world_size": ...}
    {"kind": "train", "step": 3, "loss": ..., "learning_rate": ..., "grad_norm": ..., "tokens_total": ...,
     "tokens_trainable": ..., "step_time_s": ..., "peak_vram_allocated_gib": ..., "peak_rss_gib": ...}
    {"kind": "eval", "step": 3, "eval_loss": ...}
    {"kind": "end", "rank": 0, "peak_vram_allocated_gib": ..., "peak_vram_reserved_gib": ..., ...}
    {"kind": "phase", "name": "model_loaded", "t_s": 31.2}

Phase records say where a run's wall time went, in seconds since the launcher started the process
(`PIPELINE_LAUNCHED_AT`): `configured` (imports done, config validated: the plugin is registered),
`data_ready` (tokenised and packed; the model is about to load), `model_loaded` (base model and adapter),
`training` (trainer built, the first step begins), `first_step` (its end: kernel compilation and
autotuning land here), `trained`, `saved` (adapter, tokenizer and model card written). What follows
`saved` is the interpreter's exit. With `PIPELINE_PROFILE_STEP=N` the profiler records optimizer step N
(see pipeline.in_axolotl.profiling).

Before the model loads, the recorder writes `axolotl-settings.json` beside the metrics: the settings whose
code axolotl and Liger implement per architecture (pipeline.core.startup_matrix.SETTINGS), as axolotl's process
resolved them, so that a crash in model loading or patching can be read against what was switched on.

Axolotl resets CUDA's peak-memory counters at every log, so its own `memory/max_allocated` is a per-log
figure. The recorder reads the counters at the end of each optimizer step, before that reset, and keeps
a whole-run maximum. On a CPU it records the process's peak resident set size instead. At the end of
training the ranks gather their peaks (torch.distributed), and each node's first process (LOCAL_RANK 0)
writes one `end` record per rank, with its host, into its node's file: node 0's metrics.jsonl holds every
rank's peak. The per-step records and phases are written by each node's first process too (the logged
loss is already averaged over the ranks), so every node can judge how its run ended.

Axolotl only logs a plugin that fails to import and trains on, so the launcher treats a metrics file
without a `start` record as a failed run.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from pathlib import Path
from typing import Any

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

from pipeline.core.startup_matrix import ATTENTION, KERNELS, LIGER_FLAGS
from pipeline.in_axolotl import LAUNCHED_ENV, PROFILE_ENV
from pipeline.in_axolotl import METRICS_ENV as ENV_FILE

GIB = 2**30


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def _writes() -> bool:
    """Whether this process writes its node's records: the node's first (LOCAL_RANK 0)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def _gathered(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's `record`, in rank order, where several processes train together; else this one's."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [record]
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, record)
    return [r for r in every if isinstance(r, dict)]


def _peak_rss_gib() -> float:
    # ru_maxrss is in KiB on Linux: the whole process's peak, model loading included
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def _since_launch() -> float | None:
    try:
        return round(time.time() - float(os.environ[LAUNCHED_ENV]), 2)
    except (KeyError, ValueError):
        return None


def _phase(path: Path, name: str) -> None:
    """Append one phase record (a node's first process only: the other ranks' phases are the same moments)."""
    t = _since_launch()
    if t is None or not _writes():
        return
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": "phase", "name": name, "t_s": t}) + "\n")


def _freeze_heap() -> None:
    """Move every object alive now out of reach of Python's cyclic garbage collector (gc.freeze).

    Axolotl's multipack sampler calls gc.collect() each time it packs batches: many times before the
    first step of a packed run (every count of batches packs several times), then once an epoch. Each full
    collection walks every object of torch, transformers, axolotl and the loaded model, so on a small model
    those collections dominate the time between the data and the first step (see benchmarks/README.md).
    Frozen objects are skipped. Reference counting still frees everything as before;
    only cyclic garbage among objects that exist at the moment of freezing (imports, config, the loaded
    model: all alive for the whole run) would outlive the run's collections, and one collection right
    before each freeze leaves no garbage of the import or the model load to be frozen (so no temporary
    tensor of the load can stay in GPU memory). Nothing about training changes. Launched runs only (the
    recorder's variable is set); PIPELINE_GC_FREEZE=0 turns it off.
    """
    if os.environ.get("PIPELINE_GC_FREEZE", "1") == "0":
        return
    import gc

    gc.collect()
    gc.freeze()


class _Recorder(TrainerCallback):
    def __init__(self, path: Path, trainable: int, total: int) -> None:
        self.path = path
        self.rank = _rank()
        self.trainable = trainable
        self.total = total
        self.peak_alloc = 0.0
        self.peak_reserved = 0.0
        self.step_started: float | None = None
        self.step_time: dict[int, float] = {}
        self.started = time.perf_counter()

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _sample_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.peak_alloc = max(self.peak_alloc, torch.cuda.max_memory_allocated() / GIB)
            self.peak_reserved = max(self.peak_reserved, torch.cuda.max_memory_reserved() / GIB)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if _writes():
            self._write({"kind": "start", "trainable_params": self.trainable, "total_params": self.total,
                         "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                         "max_steps": state.max_steps, "first_step": state.global_step})

        _phase(self.path, "training")

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # called once per optimizer step, after its micro-batches were fetched; eval and checkpoint
        # saving happen between steps and so stay out of the step time
        self.step_started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._sample_memory()  # synchronises the GPU first, so the step time is the device's too
        if self.step_started is not None:
            self.step_time[state.global_step] = time.perf_counter() - self.step_started
        if len(self.step_time) == 1:
            _phase(self.path, "first_step")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not _writes() or not logs:
            return
        step = state.global_step
        if "loss" in logs:
            record = {
                "kind": "train",
                "step": step,
                "epoch": logs.get("epoch", state.epoch),
                "loss": logs.get("loss"),
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "tokens_total": logs.get("tokens/total"),
                "tokens_trainable": logs.get("tokens/trainable"),
                "step_time_s": self.step_time.get(step),
                "elapsed_s": time.perf_counter() - self.started,
                "peak_vram_allocated_gib": self.peak_alloc,
                "peak_vram_reserved_gib": self.peak_reserved,
                "peak_rss_gib": _peak_rss_gib(),
            }
            self._write(record)
        elif any(k.startswith("eval_") for k in logs):
            self._write({"kind": "eval", "step": step, **{k: v for k, v in logs.items() if k.startswith("eval_")}})
        elif "train_runtime" in logs:
            self._write({"kind": "summary", "step": step, **logs})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._sample_memory()
        mine = {"kind": "end", "rank": self.rank, "host": socket.gethostname(), "step": state.global_step,
                "peak_vram_allocated_gib": self.peak_alloc, "peak_vram_reserved_gib": self.peak_reserved,
                "peak_rss_gib": _peak_rss_gib()}
        for record in _gathered(mine):
            if _writes():
                self._write(record)
        _phase(self.path, "trained")


class MetricsRecorder(BasePlugin):
    """Axolotl plugin, active when `PIPELINE_METRICS_FILE` is set: writes the phase records, freezes the
    heap after the imports and after the model load (`_freeze_heap`), and adds the recorder callback (and
    the step profiler with `PIPELINE_PROFILE_STEP`)."""

    @staticmethod
    def _target() -> Path | None:
        target = os.environ.get(ENV_FILE)
        return Path(target) if target else None

    def register(self, cfg: dict[str, Any]) -> None:
        if (target := self._target()) is not None:
            _phase(target, "configured")
            _freeze_heap()

    def pre_model_load(self, cfg: Any) -> None:
        if (target := self._target()) is not None:
            _phase(target, "data_ready")
            if _writes():
                keys = (*KERNELS, *LIGER_FLAGS, *ATTENTION, "plugins", "sample_packing", "attn_implementation",
                        "adapter", "gradient_checkpointing")
                settled = {k: cfg.get(k) for k in keys}
                (target.parent / "axolotl-settings.json").write_text(json.dumps(settled, default=str) + "\n")

    def post_model_load(self, cfg: Any, model: Any) -> None:
        if (target := self._target()) is not None:
            _phase(target, "model_loaded")
            _freeze_heap()

    def post_train(self, cfg: Any, model: Any) -> None:
        if (target := self._target()) is not None:
            _phase(target, "saved")

    def add_callbacks_pre_trainer(self, cfg: Any, model: Any) -> list[Any]:
        if (target := self._target()) is None:
            return []
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        callbacks: list[Any] = [_Recorder(target, trainable, total)]
        if (step := os.environ.get(PROFILE_ENV)) and _rank() == 0:
            from pipeline.in_axolotl.profiling import StepProfiler

            callbacks.append(StepProfiler(int(step), target.parent))
        return callbacks
