"""The measured matrix (pipeline/core/startup_matrix.py) applied to one checked config: the `facts.compat` of
`pipeline check`, and the line of the `compat-crashes` error (checks/rules/startup.py) where the config's
architecture, adapter and settings are a combination axolotl was seen to crash on at start-up."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

from pipeline.checks.context import Context, quiet
from pipeline.core import models, startup_matrix


def axolotl_version() -> str | None:
    try:
        return metadata.version("axolotl")
    except metadata.PackageNotFoundError:
        return None


def on_gpu(ctx: Context) -> Callable[[str], Any]:
    """Settings as axolotl resolves them on one CUDA GPU, where the matrix was measured. Axolotl switches its
    LoRA kernels on by itself there (AxolotlConfigWCapabilities.check_auto_enable_lora_kernels); a check
    for a target whose capabilities are not known (no GPU named) has not run that step, so it runs here."""
    body = dict(ctx.axo if ctx.axo is not None else ctx.cfg)
    if ctx.adapter and all(body.get(k) is None for k in startup_matrix.KERNELS):
        try:
            from axolotl.utils.schemas.config import AxolotlConfigWCapabilities

            with quiet():
                body = AxolotlConfigWCapabilities.check_auto_enable_lora_kernels(
                    {**body, "capabilities": {**(body.get("capabilities") or {}), "n_gpu": 1}})
        except Exception:  # noqa: BLE001 - an axolotl without the step: the settings as written
            pass
    return lambda key: body.get(key)


def facts(ctx: Context) -> dict[str, Any]:
    """facts.compat: the matrix's verdict for this config, and the settings it was judged on (judged once per
    check: the compat-crashes rule and the facts read the same)."""
    if ctx.compat is None:
        ref = ctx.cfg.get("base_model")
        arch = models.shipped_name(ref) if isinstance(ref, str) and ref else None
        settings = startup_matrix.project(on_gpu(ctx), ctx.adapter)
        ctx.compat = {**startup_matrix.judge(arch, ctx.adapter, settings, axolotl_version()), "settings": settings}
    return ctx.compat


def crash_line(f: dict[str, Any]) -> str:
    """The one line of a `crashes` verdict: what crashed, how it was seen, and the change that ran."""
    on = f.get("measured_on") or {}
    seen = f"axolotl {f['axolotl']}" + (f" on {on['card']}" if on.get("card") else "") + \
           (f", {on['date']}" if on.get("date") else "")
    said = f"{f['error']}" + (f" in {f['where']}" if f.get("where") else "")
    line = (f"{f['architecture']} with {f['adapter']} and these settings crashes at start-up ({said}; measured with "
            f"{seen}, pipeline/architectures/compat.json)")
    if fix := f.get("fix"):
        settings = ", ".join(f"{k}: {'null' if v is None else str(v).lower() if isinstance(v, bool) else v}"
                             for k, v in fix["settings"].items())
        line += f"; set {settings} ({fix['set']}), which ran"
    else:
        line += "; no single setting measured avoids it: pick another model or axolotl version"
    return line
