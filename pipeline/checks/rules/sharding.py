"""Sharding (FSDP): what axolotl 0.19 accepts in an FSDP config and accelerate then refuses as the run starts.

What axolotl's own validation refuses in FSDP configs is reported by the check already, with the run's GPU
count (`pipeline check --gpus N`: axolotl's multi-GPU validators read `n_gpu`, see
pipeline.checks.schema); what only fails later is judged here.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.checks.context import Context
from pipeline.checks.registry import rule


@rule("fsdp-layer-class", "error", "fsdp_config.transformer_layer_cls_to_wrap names a class the model does not "
                                   "have (accelerate stops the run at start-up)")
def _layer_class(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    fsdp = ctx.cfg.get("fsdp_config")
    if not isinstance(fsdp, dict) or ctx.shape is None:
        return
    key = next((k for k in ("transformer_layer_cls_to_wrap", "fsdp_transformer_layer_cls_to_wrap") if fsdp.get(k)),
               None)
    if key is None or not isinstance(fsdp[key], str):
        return
    defined = modeling_classes(ctx.shape.model_type)
    if defined is None:  # no modeling module of its own in transformers (remote code, a text sub-config)
        return
    missing = [c.strip() for c in fsdp[key].split(",") if c.strip() and c.strip() not in defined]
    if missing:
        layers = sorted(c for c in defined if c.endswith(("DecoderLayer", "Block")))
        yield ("fsdp_config", key), (
            f"{key}: {', '.join(missing)} is not a module of {ctx.shape.model_type} models: the run stops at "
            f"start-up (accelerate: \"Could not find the transformer layer class ... in the model\"); "
            f"use {' or '.join(layers[:2]) or 'its decoder layer class'}")


def modeling_classes(model_type: str) -> set[str] | None:
    """The class names transformers' modeling module for `model_type` defines (None where there is none)."""
    import importlib

    from transformers.models.auto.configuration_auto import model_type_to_module_name

    try:
        name = model_type_to_module_name(model_type)
        module = importlib.import_module(f"transformers.models.{name}.modeling_{name.rsplit('.', 1)[-1]}")
    except Exception:  # noqa: BLE001 - any failure to find it means: not judged
        return None
    return {k for k, v in vars(module).items() if isinstance(v, type)}


@rule("cpu-fsdp", "error", "FSDP on a CPU-only run (axolotl 0.19 builds FSDP's device mesh on CUDA)")
def _cpu_fsdp(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.target.device != "cpu" or not (ctx.cfg.get("fsdp_config") or ctx.cfg.get("fsdp")):
        return
    key = "fsdp_config" if ctx.cfg.get("fsdp_config") else "fsdp"
    yield (key,), (f"{key} on a CPU run: axolotl 0.19 builds FSDP's device mesh on CUDA whatever the device "
                   f"(utils/distributed.py, build_parallelism_config), so every rank dies at start-up with "
                   f"\"module 'torch._C' has no attribute '_cuda_setDevice'\"; on CPUs train without FSDP "
                   f"(several processes then run DDP over gloo)")
