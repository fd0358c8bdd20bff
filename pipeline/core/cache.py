"""The cache root every kept result lives under: `$PIPELINE_CACHE`, default `~/.cache/pipeline`.

Each user owns one folder beneath it: `models/` (the models core.models builds), `prepared/` (axolotl's
prepared data) and `pycache/` (bytecode) for core.engine, `checks/` (remembered checks, for smoke and
train), `shapes/` (checks.shapes) and `hub/` (hub config.json files, checks.hub).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pipeline.core.errors import Finding, WriteRefused


def cache_dir() -> Path:
    return Path(os.environ.get("PIPELINE_CACHE", Path.home() / ".cache" / "pipeline")).expanduser()


#: what a folder says when it will not take a write (a full, read-only or foreign disk; a file in the way)
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENOTDIR,
                errno.EEXIST, errno.ENAMETOOLONG)


def require_writable() -> None:
    """Refuse a run up front when the cache cannot be written: smoke and train keep prepared data and built
    models there, and axolotl would otherwise fail deep inside its data preparation. WriteRefused
    (`cache-unwritable`, exit 3), naming the cache; nothing is written."""
    root = cache_dir()
    probe = root / "prepared" / f".probe.{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise WriteRefused(Finding(str(root), None, "cache-unwritable",
                                   f"the cache ($PIPELINE_CACHE, by default ~/.cache/pipeline) cannot be written ({exc.strerror or exc}); runs keep "
                                   f"prepared data and built models there: make it a writable folder, or set "
                                   f"PIPELINE_CACHE to one")) from None
