"""What a run left on disk, judged before anything uses it: the adapter (merge, evaluate), the merged
model (evaluate, `pipeline runs`), the run's own records (metrics.jsonl), and training's checkpoints
(`train --resume` continues from the newest complete one). Each judgement reads headers only, through the
bounded reader (core/safeio), and answers in the user's words: what is wrong, or None.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pipeline.core import safeio
from pipeline.core.errors import printable

CHECKPOINT_PREFIX = "checkpoint-"


def file_problem(path: Path, max_bytes: int = safeio.MAX_METRICS_BYTES) -> str | None:
    """Why a file pipeline writes into a run folder cannot be read (its type or size), or None; a missing
    file is no problem. Nothing is opened: cheap enough for every run `pipeline runs` lists."""
    if not os.path.lexists(path):
        return None
    try:
        safeio.check_regular(path, "record", max_bytes, what=path.name, follow=False)
    except safeio.BadFile as exc:
        return exc.message
    return None


def adapter_problem(folder: Path) -> str | None:
    """What is wrong with the adapter a run saved (missing, damaged, cut short, settings peft cannot use),
    or None."""
    config_file = folder / "adapter_config.json"
    if not os.path.lexists(config_file):
        return f"no adapter in {folder} (a full fine-tune has nothing to merge)"
    try:
        adapter_cfg = safeio.read_json(config_file, what="adapter_config.json", max_bytes=safeio.MiB, follow=False)
    except safeio.BadFile as exc:
        return f"{config_file}: {exc.message}"
    if (why := safeio.adapter_config_problem(adapter_cfg)) is not None:
        return f"{config_file}: {why}; train the run again, or restore the file"
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        weights = folder / name
        if os.path.lexists(weights):
            why = safeio.safetensors_problem(weights) if name.endswith(".safetensors") else \
                safeio.torch_file_problem(weights)
            if why is not None:
                return f"the adapter is damaged: {why}; train the run again, or restore {weights}"
            return None
    return f"{folder} has adapter_config.json but no adapter weights"


def merged_problem(run_path: Path) -> str | None:
    """What is wrong with RUN/merged/ (cut short, a broken config.json, no weights), or None when it is
    whole or absent: evaluate refuses a damaged one and `pipeline runs` never calls it verified."""
    merged = run_path / "merged"
    if not os.path.lexists(merged):
        return None
    if (why := safeio.merged_problem(merged)) is not None:
        return f"{merged} is damaged: {why}; merge again with `pipeline merge --force {run_path}`"
    return None


# --- checkpoints ---------------------------------------------------------------------------------------------

def checkpoint_step(path: Path | None) -> int:
    if path is None:
        return 0
    suffix = path.name[len(CHECKPOINT_PREFIX):]
    return int(suffix) if suffix.isdigit() else -1


def is_complete(path: Path) -> bool:
    """The trainer writes trainer_state.json last, after weights, optimizer, scheduler and RNG state: a
    checkpoint is complete when that names its step and every file beside it is whole (safeio)."""
    return safeio.checkpoint_problem(path, checkpoint_step(path)) is None


def checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and checkpoint_step(p) >= 0]
    return sorted(found, key=checkpoint_step)


def last_complete_checkpoint(output_dir: Path, say: bool = False) -> Path | None:
    """The newest complete checkpoint; with `say`, each newer one skipped is named with its reason."""
    for path in reversed(checkpoints(output_dir)):
        why = safeio.checkpoint_problem(path, checkpoint_step(path))
        if why is None:
            return path
        if say:
            print(printable(f"note: skipping {path.name}: {why}"), file=sys.stderr)
    return None


def discard_after(output_dir: Path, step: int) -> list[Path]:
    """Delete checkpoints newer than `step` (they are incomplete, or the trainer would have chosen them)."""
    gone = [p for p in checkpoints(output_dir) if checkpoint_step(p) > step]
    for p in gone:
        shutil.rmtree(p)
    return gone
