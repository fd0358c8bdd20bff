"""The cache root every kept result lives under: `$PIPELINE_CACHE`, default `~/.cache/pipeline`.

Each user owns one folder beneath it: `models/` (the models core.models builds), `prepared/` (axolotl's
prepared data) and `pycache/` (bytecode) for core.engine, `checks/` (remembered checks, for smoke and
train), `shapes/` (checks.shapes) and `hub/` (hub config.json files, checks.hub).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("PIPELINE_CACHE", Path.home() / ".cache" / "pipeline")).expanduser()
