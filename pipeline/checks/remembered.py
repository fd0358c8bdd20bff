"""Remembered checks: a config that passed is not checked again until something it depends on changes.

`pipeline smoke` and `pipeline train` check first, and a check imports axolotl's schema, which pulls in
torch: seconds of the launching process (see benchmarks/README.md). A result with no errors (warnings
allowed) is kept in `$PIPELINE_CACHE/checks/<key>.json` and replayed while nothing changed. The key is content, never a name,
size or time: the config's text, the `--set` overrides, the checking code (every module of
`pipeline.checks`, the section schema and the config loader, the shipped shapes), axolotl's version, the target (device, card,
memory) and the working directory (relative data paths). The entry also lists every data file the check
read with its sha256, recomputed on recall: an edited dataset is checked afresh even when its size and
modification time are unchanged. Errors are never remembered.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.core import safeio
from pipeline.core.config import LoadedConfig
from pipeline.core.errors import Finding

_PACKAGE = Path(__file__).resolve().parent
_CORE = _PACKAGE.parent / "core"
_SHAPES = _PACKAGE.parent / "architectures"
#: plumbing whose behaviour a remembered result also depends on
_CORE_CODE = ("config.py", "section.py", "bounds.py", "models.py", "cache.py", "safeio")


def key(loaded: LoadedConfig, overrides: dict[str, Any], target: dict[str, Any]) -> str:
    try:
        axolotl = metadata.version("axolotl")
    except metadata.PackageNotFoundError:
        axolotl = None
    h = hashlib.sha256()
    for source in sorted(_PACKAGE.rglob("*.py")):
        h.update(source.read_bytes())
    for name in _CORE_CODE:  # a module, or a package's every module
        for source in sorted((_CORE / name).rglob("*.py")) if (_CORE / name).is_dir() else [_CORE / name]:
            h.update(source.read_bytes())
    for shape in sorted(_SHAPES.rglob("*.json")):  # the shipped shapes and the ids that name them
        h.update(shape.read_bytes())
    h.update(json.dumps({"config": str(loaded.path.resolve()), "text": loaded.text, "overrides": overrides,
                         "axolotl": axolotl, "target": target, "cwd": os.getcwd()},
                        default=str, sort_keys=True).encode())
    return h.hexdigest()[:32]


def sha256_of(path: str) -> str | None:
    """The file's sha256, or None where it is gone or no longer a regular file (a FIFO is never opened)."""
    try:
        return safeio.sha256(path)
    except (safeio.BadFile, OSError):
        return None


class Remembered(NamedTuple):
    """A remembered check: its findings, and the schedule facts a run's computation plan reads (or None)."""

    findings: list[Finding]
    schedule: dict[str, Any] | None


def recall(folder: Path, key: str) -> Remembered | None:
    try:
        data: dict[str, Any] = safeio.read_json(folder / f"{key}.json", max_bytes=safeio.MiB)
        if any(sha256_of(path) != digest for path, digest in data.get("files", {}).items()):
            return None
        found = [Finding(f["path"], f["line"], f["rule"], f["message"], f["severity"]) for f in data["findings"]]
        schedule = data.get("schedule")
        return Remembered(found, schedule if isinstance(schedule, dict) else None)
    except (safeio.BadFile, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or from another version: check afresh


def store(folder: Path, key: str, found: list[Finding], files: list[str],
          schedule: dict[str, Any] | None = None) -> None:
    from pipeline.core import runs

    try:
        folder.mkdir(parents=True, exist_ok=True)
        runs.write_atomic(folder / f"{key}.json", json.dumps({"findings": [f.as_dict() for f in found],
                                                             "files": {p: sha256_of(p) for p in files},
                                                             "schedule": schedule}) + "\n")
    except OSError:
        pass  # a read-only cache only costs the next run its check
