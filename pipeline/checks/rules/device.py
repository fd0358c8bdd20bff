"""Rules on the device the run happens on: bf16 where the card has none, CPU runs that would die or
crawl, and an estimated peak that does not fit the card."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.checks.context import Context
from pipeline.checks.memory import ESTIMATE_TOLERANCE, estimates, fits, margin_gib, recommendation
from pipeline.checks.registry import rule


@rule("bf16-unsupported", "error", "bf16: true on a GPU without bf16 (before Ampere)")
def _bf16_gpu(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    t = ctx.target
    if t.device == "gpu" and t.bf16 is False and (ctx.cfg.get("bf16") is True or ctx.cfg.get("bfloat16") is True):
        key = "bf16" if ctx.cfg.get("bf16") is True else "bfloat16"
        yield (key,), (f"{key}: true on {t.gpu} (sm_{t.capability[0]}{t.capability[1]}), which has no bf16 (it needs "  # type: ignore[index]
                       f"sm_80+): training fails; use bf16: auto (fp16 on this card) or fp16: true")



@rule("cpu-bf16", "error", "bf16: true on a CPU-only run (transformers refuses it)")
def _cpu_bf16(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.target.device == "cpu" and ctx.cfg.get("bf16") is True:
        yield ("bf16",), ("bf16: true on a CPU run stops after data preparation (\"Your setup doesn't support "
                          "bf16/gpu\"); set bf16: false and fp16: false")



@rule("cpu-fp16", "warning", "bf16: auto or fp16 on a CPU-only run (fp16 autocast, several times slower)")
def _cpu_fp16(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.target.device != "cpu":
        return
    bf16, fp16 = ctx.cfg.get("bf16", "auto"), ctx.cfg.get("fp16")
    if fp16 is True or (bf16 == "auto" and fp16 is None and not ctx.cfg.get("float16")):
        key = "fp16" if fp16 is True else "bf16" if "bf16" in ctx.cfg else "base_model"
        said = "fp16: true" if fp16 is True else "bf16: auto" + (" (the default)" if "bf16" not in ctx.cfg else "")
        yield (key,), (f"{said} on a CPU run means fp16 autocast (axolotl finds no bf16 GPU), several times slower "
                       f"than float32; set bf16: false and fp16: false")



@rule("cpu-lora-kernels", "error", "axolotl's Triton LoRA kernels on a CPU-only run")
def _cpu_kernels(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.target.device != "cpu" or not ctx.adapter or ctx.axo is None:
        return
    names = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel")
    on = [k for k in names if ctx.axo.get(k)]
    if not on:
        return
    auto = not any(k in ctx.cfg for k in (*names, "lora_embedding_kernel"))
    why = "axolotl switches them on when none is set" if auto else "they are set to true"
    yield ((on[0],) if on[0] in ctx.cfg else ("adapter",)), (
        f"{', '.join(on)} use Triton kernels that need CUDA ({why}): the run dies with \"Torch not compiled with "
        f"CUDA\"; set lora_mlp_kernel, lora_qkv_kernel and lora_o_kernel to false")



@rule("vram-exceeds-gpu", "error", "the estimated peak of the config's adapter (or full fine-tune) does not fit --gpu-mem")
def _vram(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    card = ctx.target.memory_gib
    if not card or ctx.target.device != "gpu":
        return
    est = estimates(ctx)
    if not est:
        return
    mine = est[ctx.adapter or "full"]
    if not fits(mine, card):
        what = ctx.adapter or "a full fine-tune"
        yield ("adapter",), (f"{what} is estimated at ~{mine.needs_gib:.1f} GiB peak (+{ESTIMATE_TOLERANCE:.0%} for the "
                             f"estimate's error), more than a {card:g} GiB card leaves (~{card - margin_gib(card):.1f} "
                             f"GiB); {recommendation(ctx, card)}")
