"""What a run's metrics.jsonl says, in the figures people read (cheap to import: no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: the metrics recorder's fields (pipeline.in_axolotl.recorder) and their types (each may be null)
INTEGERS = ("step", "rank", "world_size", "max_steps", "first_step", "trainable_params", "total_params")
NUMBERS = ("loss", "eval_loss", "epoch", "learning_rate", "grad_norm", "tokens_total", "tokens_trainable",
           "step_time_s", "elapsed_s", "peak_vram_allocated_gib", "peak_vram_reserved_gib", "peak_rss_gib", "t_s",
           "train_runtime")
#: what each kind of record must hold to be read
REQUIRED = {"train": ("step",), "eval": ("step",), "phase": ("name", "t_s")}


def well_formed(record: Any) -> bool:
    """Whether a parsed line of metrics.jsonl is a record as the recorder writes it (a damaged or hand-edited
    line is not, and is skipped like a last line cut short by a crash)."""
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        return False
    if any(record.get(k) is None for k in REQUIRED.get(record["kind"], ())):
        return False
    for key in INTEGERS:
        if record.get(key) is not None and type(record[key]) is not int:
            return False
    for key in NUMBERS:
        if record.get(key) is not None and (isinstance(record[key], bool) or not isinstance(record[key], (int, float))):
            return False
    return record.get("name") is None or isinstance(record["name"], str)


def summarize(records: Sequence[dict[str, Any]], *, warmup_steps: int = 1) -> dict[str, Any]:
    """Losses, parameters, whole-run memory peaks and steady-state throughput of one run.

    Throughput counts every token the model processed (prompt and padding-free completion alike: axolotl's
    `tokens/total`) over the summed optimizer-step times, leaving out the first `warmup_steps` steps,
    which carry one-off costs (allocator growth, kernel selection, compilation).
    """
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval" and r.get("eval_loss") is not None]
    start = next((r for r in records if r.get("kind") == "start"), {})
    ends = [r for r in records if r.get("kind") == "end"]
    summary: dict[str, Any] = next((r for r in reversed(records) if r.get("kind") == "summary"), {})

    peaks_from = ends or train[-1:]
    out: dict[str, Any] = {
        "steps": train[-1]["step"] if train else 0,
        "losses": [r.get("loss") for r in train],
        "first_loss": train[0].get("loss") if train else None,
        "final_loss": train[-1].get("loss") if train else None,
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "first_eval_loss": evals[0]["eval_loss"] if evals else None,
        "trainable_params": start.get("trainable_params"),
        "total_params": start.get("total_params"),
        "world_size": start.get("world_size", 1),
        "peak_vram_allocated_gib": max((r.get("peak_vram_allocated_gib") or 0.0 for r in peaks_from), default=None),
        "peak_vram_reserved_gib": max((r.get("peak_vram_reserved_gib") or 0.0 for r in peaks_from), default=None),
        "peak_rss_gib": max((r.get("peak_rss_gib") or 0.0 for r in peaks_from), default=None),
        "per_rank_peak_vram_gib": {str(r.get("rank", 0)): r.get("peak_vram_allocated_gib") for r in ends},
        "per_rank_peak_rss_gib": {str(r.get("rank", 0)): r.get("peak_rss_gib") for r in ends},
        "train_runtime_s": summary.get("train_runtime"),
        "throughput_tok_s": None,
        "trainable_tok_s": None,
    }
    out["phases"] = {r["name"]: r["t_s"] for r in records if r.get("kind") == "phase"}
    steady = train[warmup_steps:] if len(train) > warmup_steps else train
    times = [r.get("step_time_s") for r in steady]
    if steady and all(t for t in times):
        before = train[len(train) - len(steady) - 1] if len(steady) < len(train) else None
        total = (steady[-1].get("tokens_total") or 0) - ((before or {}).get("tokens_total") or 0)
        trainable = (steady[-1].get("tokens_trainable") or 0) - ((before or {}).get("tokens_trainable") or 0)
        seconds = sum(t for t in times if t)
        out["throughput_tok_s"] = total / seconds if total else None
        out["trainable_tok_s"] = trainable / seconds if trainable else None
        out["steady_steps"] = len(steady)
    return out


#: the recorder's phases in order, and what the time up to each one was spent on
PHASES = (("configured", "startup"), ("data_ready", "data"), ("model_loaded", "model"),
          ("training", "trainer"), ("first_step", "first step"), ("trained", "steps"), ("saved", "save"))


def phase_line(phases: dict[str, float], wall_s: float | None = None) -> str:
    """'startup 9.1s | data 1.2s | model 10.3s | ...': where one run's wall time went."""
    parts, last = [], 0.0
    for key, label in PHASES:
        if key in phases:
            parts.append(f"{label} {phases[key] - last:.1f}s")
            last = phases[key]
    if not parts:
        return ""
    if wall_s is not None and wall_s >= last:
        parts.append(f"exit {wall_s - last:.1f}s")
    return " | ".join(parts)


def rank_line(summary: dict[str, Any]) -> str:
    """'rank 0 0.86 GiB | rank 1 0.85 GiB RSS': each rank's whole-run peak, where several ranks trained."""
    on_gpu = used_gpu(summary)
    peaks = summary.get("per_rank_peak_vram_gib" if on_gpu else "per_rank_peak_rss_gib") or {}
    if len(peaks) < 2:
        return ""
    shown = [f"rank {r} {'-' if v is None else f'{v:.2f}'} GiB" for r, v in sorted(peaks.items(), key=lambda kv: int(kv[0]))]
    return "per-rank peak: " + " | ".join(shown) + ("" if on_gpu else " RSS")


def used_gpu(summary: dict[str, Any]) -> bool:
    return bool(summary.get("peak_vram_allocated_gib"))


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.{0 if n >= 100 * size else 1}f}{unit}"
    return str(n)
