"""The checks every stage runs before it spends time on a model: the same ones `pipeline check` runs.

`findings(loaded)` returns every problem found in a config and the data it names, without loading a
model or touching a GPU. Stages stop on errors and print warnings.

A config that passed (warnings allowed) is remembered in `$PIPELINE_CACHE/checks/`, keyed by its path
and text, the checking code, axolotl's version and the target (the GPU here); the entry also records the
size and modification time of every data file the check read. Running the same smoke or training again then skips
the check, which on an H100 host cost several seconds of the launching process (axolotl's schema pulls in
torch), and replays its warnings. Any change to the config, the data, the rules or the card checks
afresh. Errors are never remembered: a config with errors is checked every time.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.core import bounds
from pipeline.core.config import PIPELINE_KEY, LoadedConfig
from pipeline.core.errors import Finding

#: the code whose behaviour a remembered result depends on
_CODE = ("preflight.py", "rules.py", "data.py", "estimate.py", "bounds.py", "config.py", "models.py")


def findings(loaded: LoadedConfig, cache_dir: Path | None = None) -> list[Finding]:
    from pipeline.core import rules  # the full rule set (config and data); see pipeline check

    target = rules.target_for(loaded)  # asks NVML once, for the key and for the rules
    key = _key(loaded, target.as_dict()) if cache_dir is not None else None
    if key is not None and cache_dir is not None and (hit := _recall(cache_dir / f"{key}.json")) is not None:
        return hit

    found: list[Finding] = []
    section = loaded.section
    found += bounds.validate(section.get("bounds"), str(loaded.path),
                             loaded.line(PIPELINE_KEY, "bounds"))
    report = rules.inspect(loaded, target)
    found += report.findings
    if key is not None and cache_dir is not None and not errors(found):
        files = [d["resolved"] for d in report.facts.get("data", []) if d.get("resolved")]
        _remember(cache_dir / f"{key}.json", found, files)
    return found


def errors(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.severity == "error"]


def _key(loaded: LoadedConfig, target: dict[str, Any]) -> str:
    try:
        axolotl = metadata.version("axolotl")
    except metadata.PackageNotFoundError:
        axolotl = None
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _CODE:
        h.update((here / name).read_bytes())
    h.update(json.dumps({"config": str(loaded.path.resolve()), "text": loaded.text, "axolotl": axolotl,
                         "target": target, "cwd": os.getcwd()}, default=str).encode())
    return h.hexdigest()[:32]


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _recall(entry: Path) -> list[Finding] | None:
    try:
        data: dict[str, Any] = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    if any(_stat(path) != stat for path, stat in data.get("files", {}).items()):
        return None
    return [Finding(f["path"], f["line"], f["rule"], f["message"], f["severity"]) for f in data["findings"]]


def _remember(entry: Path, found: list[Finding], files: list[str]) -> None:
    from pipeline.core import runs

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        runs.write_atomic(entry, json.dumps({"findings": [f.as_dict() for f in found],
                                             "files": {p: _stat(p) for p in files}}) + "\n")
    except OSError:
        pass  # a read-only cache only costs the next run its check
