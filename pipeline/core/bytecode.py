"""Compiled bytecode where the environment forbids writing it and none was installed: `$PIPELINE_CACHE/pycache`,
decided once when the CLI starts and inherited by axolotl's process through the environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: "0" turns the bytecode cache below off
PYCACHE_ENV = "PIPELINE_PYCACHE"
#: packages whose top-level bytecode tells whether the installed stack carries any (they are looked up, not
#: imported)
BYTECODE_PROBES = ("axolotl", "transformers", "torch", "peft", "datasets", "trl")


def bytecode_cache() -> Path | None:
    """Where compiled bytecode should go when the environment forbids writing it and none was installed.

    CUDA images commonly set PYTHONDONTWRITEBYTECODE=1 (so do ours: it keeps image layers clean). That
    costs nothing where pip compiled the packages at install time, but packages unpacked rather than
    pip-installed (an offline bundle, some images' own stacks) then carry no .pyc at all, and every
    axolotl process compiles their sources again, a large share of its startup (see benchmarks/README.md).
    There, bytecode is kept in $PIPELINE_CACHE/pycache (PYTHONPYCACHEPREFIX: a mirror tree, never a file
    beside the sources). Python then ignores the __pycache__ folders beside the sources, so the first run
    compiles everything once and every later run reads it back. That is why it is used only where one of
    BYTECODE_PROBES lacks its bytecode: in a pip-installed image (ours) every `docker run` would otherwise
    start by compiling what is already compiled.

    Returns:
        `$PIPELINE_CACHE/pycache`; None when bytecode is written normally, when every probe has its
        bytecode, when the user set a PYTHONPYCACHEPREFIX of their own, or with PIPELINE_PYCACHE=0.
    """
    if os.environ.get(PYCACHE_ENV) == "0" or os.environ.get("PYTHONPYCACHEPREFIX"):
        return None
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") and not sys.dont_write_bytecode:
        return None
    if not _installed_without_bytecode(BYTECODE_PROBES):
        return None
    from pipeline.core.cache import cache_dir

    return cache_dir() / "pycache"


def _installed_without_bytecode(packages: tuple[str, ...]) -> bool:
    """Whether one of these installed packages has no .pyc of its __init__ beside it for this interpreter."""
    import importlib.util

    for name in packages:
        try:
            spec = importlib.util.find_spec(name)  # a top-level name: found on sys.path, not imported
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        source = Path(spec.origin)
        pyc = source.parent / "__pycache__" / f"{source.stem}.{sys.implementation.cache_tag}.pyc"
        if not pyc.is_file():
            return True
    return False


def use_bytecode_cache() -> None:
    """Adopt bytecode_cache() for this command: decided once, when the CLI starts.

    This process uses it for its own imports (tokenizers and transformers for the checks), and it goes
    into os.environ, so axolotl and everything axolotl starts (torchrun's workers) inherit it through
    environment() with no second decision.
    """
    prefix = bytecode_cache()
    if prefix is None or sys.pycache_prefix is not None:  # `-X pycache_prefix=...` is the user's own
        return
    sys.pycache_prefix = str(prefix)
    sys.dont_write_bytecode = False
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
