"""Run folders: one per invocation, holding everything needed to know what produced a result.

    runs/20261125-174312-tiny_cpu-smoke/
        config.yaml      the resolved config axolotl ran (the user's file is never edited)
        source.yaml      a byte copy of the user's config as it was
        manifest.json    versions, git revision, hashes of config and data, hardware, command, status
        metrics.jsonl    one JSON object per logged step, written by the metrics recorder plugin
        axolotl.log      axolotl's output (it also streams to the terminal)
        output/          axolotl's output_dir: adapter, checkpoints

A folder is created only after the input has been validated, so bad input leaves nothing behind.
Files are written through a temporary name and renamed, so none is ever seen half-written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError

PACKAGES = ("torch", "transformers", "peft", "axolotl", "accelerate", "datasets", "trl", "bitsandbytes",
            "finetune-pipeline")
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"


def runs_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get("PIPELINE_RUNS_DIR") or "runs").expanduser()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@dataclass
class Run:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def output_dir(self) -> Path:
        return self.path / "output"

    def manifest(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.manifest_path.read_text()))
        except (OSError, ValueError):
            return {}

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        data = self.manifest()
        data.update(fields)
        write_json(self.manifest_path, data)
        return data

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a last line cut short by a crash is skipped, not fatal."""
    out = []
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return out


def create(root: Path, config_name: str, stage: str) -> Run:
    """A new, empty run folder with a unique, sortable name."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{config_name}-{stage}"
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
            return Run(path)
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {root}")


def find(root: Path, ref: str) -> Run:
    """The run a user names: a folder path, or a run name under the runs folder."""
    path = Path(ref) if Path(ref).is_dir() else root / ref
    if not (path / MANIFEST).is_file():
        raise UserError.at(ref, None, "run-missing",
                           f"no run folder with a manifest here (looked in {path}); see `pipeline runs`")
    return Run(path)


def all_runs(root: Path) -> list[Run]:
    if not root.is_dir():
        return []
    return sorted((Run(p) for p in root.iterdir() if (p / MANIFEST).is_file()), key=lambda r: r.name)


def find_eligible(root: Path, ref: str, problem: Callable[[Run], str | None], rule: str) -> Run:
    """The run a user names (see `find`), refused with one line under `rule` when `problem` finds one."""
    run = find(root, ref)
    if (why := problem(run)) is not None:
        raise UserError.at(str(run.path), None, rule, why)
    return run


def newest(root: Path, problem: Callable[[Run], str | None]) -> Run | None:
    """The newest run under `root` for which `problem` finds nothing (merge and evaluate's --auto pick)."""
    return next((run for run in reversed(all_runs(root)) if not problem(run)), None)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


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
    """GPU names and driver when there are GPUs, else the CPU; always cores and memory."""
    info: dict[str, Any] = {"machine": platform.machine(), "cpu": _cpu_name(), "cores": os.cpu_count()}
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    gpus = []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True).stdout
        for line in out.strip().splitlines():
            name, driver, mem = (x.strip() for x in line.split(","))
            gpus.append({"name": name, "driver": driver, "memory": mem})
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
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


def start_manifest(run: Run, *, stage: str, config_path: Path, config_sha256: str, resolved_sha256: str,
                   data_files: Iterable[Path], argv: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    manifest = {
        "run": run.name,
        "stage": stage,
        "status": "running",
        "started": now(),
        "command": argv if argv is not None else sys.argv,
        "config": {"path": str(config_path), "sha256": config_sha256, "resolved_sha256": resolved_sha256},
        "data": {str(p): sha256_file(p) for p in data_files},
        "versions": versions(),
        "git": git_revision(config_path.parent),
        "hardware": hardware(),
        **extra,
    }
    write_json(run.manifest_path, manifest)
    return manifest


def finish_manifest(run: Run, status: str, **fields: Any) -> dict[str, Any]:
    return run.update_manifest(status=status,
                               finished=now(),
                               **fields)


def now() -> str:
    """The time stamp every manifest and result file uses: UTC, to the second, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
