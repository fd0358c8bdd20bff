"""The peak-VRAM estimate applied to a checked config, and the LoRA/QLoRA advice for a card."""

from __future__ import annotations

from pipeline.checks import estimate
from pipeline.checks.context import Context, as_int


def tokens_per_micro_batch(ctx: Context) -> int:
    mbs = max(as_int(ctx.get("micro_batch_size", 1), 1), 1)
    seq = as_int(ctx.get("sequence_len", 2048), 2048)
    if ctx.get("sample_packing") or ctx.get("pad_to_sequence_len"):
        return mbs * seq
    lengths = [n for d in ctx.sets if d.key == "datasets" for n in (d.lengths or [])]
    return mbs * (min(seq, max(lengths)) if lengths else seq)



def estimates(ctx: Context) -> dict[str, estimate.Estimate]:
    if ctx.shape is None:
        return {}
    tokens = tokens_per_micro_batch(ctx)
    return {a: estimate.peak_vram(ctx.shape, ctx.cfg, a, tokens) for a in ("lora", "qlora")}



def margin_gib(card_gib: float) -> float:
    """Room left beside the estimate: the caching allocator's reserve (0.8-0.9 GiB over allocated in the
    measured runs) and the CUDA context, which torch does not count."""
    return max(1.5, 0.05 * card_gib)



def recommendation(ctx: Context, card_gib: float) -> str:
    est = estimates(ctx)
    if not est:
        return "no estimate (architecture unknown)"
    room = card_gib - margin_gib(card_gib)
    lora, qlora = est["lora"].peak_gib, est["qlora"].peak_gib
    if lora <= room:
        return (f"LoRA fits a {card_gib:g} GiB card (~{lora:.1f} GiB): use it; no quantisation error and faster than "
                f"QLoRA (~{qlora:.1f} GiB)")
    if qlora <= room:
        return f"QLoRA (~{qlora:.1f} GiB) fits a {card_gib:g} GiB card; LoRA (~{lora:.1f} GiB) does not"
    levers = ["lower sequence_len or micro_batch_size"]
    if not ctx.get("gradient_checkpointing"):
        levers.append("enable gradient_checkpointing")
    if not (ctx.get("liger_fused_linear_cross_entropy") or ctx.get("cut_cross_entropy")):
        levers.append("use a fused cross-entropy (Liger's liger_fused_linear_cross_entropy), which never holds the "
                      "logits")
    return (f"neither fits a {card_gib:g} GiB card (LoRA ~{lora:.1f}, QLoRA ~{qlora:.1f} GiB): "
            + ", or ".join(levers))
