"""What produced a result: the versions of the stack, the project's git revision, the hardware, and the
content (sha256) of the files it read, with a way to tell whether those files still hold it.

Run manifests record these (pipeline.core.runs), and so do evaluations and the benchmarks' records.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.core import safeio

#: the packages whose versions a record holds
PACKAGES = ("torch", "transformers", "peft", "axolotl", "accelerate", "datasets", "trl", "bitsandbytes",
            "finetune-pipeline")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def record(config_path: Path | str | None) -> dict[str, Any]:
    """What produced a result, built one way for run manifests, evaluations and smoke results: the stack's
    versions, the git revision and the hardware (the GPUs this process may use).

    Git is read from the folder of the config the result came from (the folder holding `config_path`; the
    current folder where there is none): the config and its data are what a user versions beside their runs,
    and that folder is the same whatever folder the command was started from. A config outside any
    repository records no commit."""
    folder = Path(config_path).resolve().parent if config_path else Path.cwd()
    return {"versions": versions(), "git": git_revision(folder), "hardware": hardware()}


def git_revision(cwd: Path | None = None) -> dict[str, Any]:
    """Commit of the project the run was started from, and whether the tree had uncommitted changes."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": rev, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def hardware() -> dict[str, Any]:
    """GPU names and driver when there are GPUs (those visible to this process), else the CPU; always cores and
    memory."""
    info: dict[str, Any] = {"machine": platform.machine(), "cpu": _cpu_name(), "cores": os.cpu_count()}
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    from pipeline.core import gpus as probe

    # the GPUs this run may use (CUDA_VISIBLE_DEVICES narrows them), memory in MiB as records before had it
    gpus = [{"name": g.name, "driver": g.driver,
             "memory": None if g.memory_bytes is None else f"{g.memory_bytes // 2**20} MiB"} for g in probe.devices()]
    info["gpus"] = gpus
    info["accelerator"] = gpus[0]["name"] if gpus else "cpu"
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sha256_file(path: Path) -> str:
    return safeio.sha256(path)


def data_hashes(files: Iterable[Path]) -> dict[str, str]:
    """sha256 of every data file, read once for the manifest and the prepared-data key alike."""
    return {str(p): safeio.sha256(p) for p in files}


def changed_data(hashes: dict[str, str]) -> list[str]:
    """The files whose content is no longer what `hashes` says (edited, replaced, gone)."""
    changed = []
    for path, digest in hashes.items():
        try:
            now = safeio.sha256(path)
        except (safeio.BadFile, OSError):
            now = None
        if now != digest:
            changed.append(path)
    return changed
