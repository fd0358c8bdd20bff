"""The peak-VRAM estimate applied to a checked config, and the LoRA/QLoRA advice for a card."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.checks import estimate, sharding
from pipeline.checks.context import Context, as_int
from pipeline.checks.shapes import Shape


def tokens_per_micro_batch(ctx: Context) -> int:
    mbs = max(as_int(ctx.get("micro_batch_size", 1), 1), 1)
    seq = as_int(ctx.get("sequence_len", 2048), 2048)
    if ctx.get("sample_packing") or ctx.get("pad_to_sequence_len"):
        return mbs * seq
    lengths = [n for d in ctx.sets if d.key == "datasets" for n in (d.lengths or [])]
    return mbs * (min(seq, max(lengths)) if lengths else seq)



def estimates(ctx: Context) -> dict[str, estimate.Estimate]:
    """LoRA, QLoRA and a full fine-tune of the config's model, batch and settings (the config's own is
    `ctx.adapter`, or "full" without an adapter): per rank where the config shards with FSDP over the
    target's ranks (pipeline.checks.sharding), else on one GPU."""
    if ctx.shape is None:
        return {}
    tokens = tokens_per_micro_batch(ctx)
    ranks = ctx.target.ranks if sharding.fsdp_of(ctx.cfg) is not None else 1
    return {a: sharding.per_rank(ctx.shape, ctx.cfg, a, tokens, ranks) for a in ("lora", "qlora", "full")}


#: how far a measured peak may lie above the estimate, as a fraction of it: the bound
#: tests/unit/test_estimate_measured.py holds every measured row of docs/check.md to (benchmarks/README.md)
ESTIMATE_TOLERANCE = 0.05
#: how far a measured peak may lie above the estimate when judged against a config's own peak_vram_gib bound: the
#: worst of the measured rows lay 1.6% above its estimate (benchmarks/README.md). A bound a run breaks fails its
#: smoke with one line, where a card it overflows fails mid-run, so the card keeps ESTIMATE_TOLERANCE.
BOUND_TOLERANCE = 0.02


def margin_gib(card_gib: float) -> float:
    """Room left beside the estimate on a card (GiB): max(1.5 GiB, 5% of `card_gib`), for the CUDA context,
    which torch does not count, and the caching allocator's fragmentation. What the allocator reserves on a
    card with room to spare (benchmarks/README.md) says how much it kept, not how much it needs, so the
    margin is not derived from it."""
    return max(1.5, 0.05 * card_gib)


def fits(e: estimate.Estimate, card_gib: float) -> bool:
    """The estimate, raised by its tolerance, fits the card less its margin."""
    return e.needs_gib * (1 + ESTIMATE_TOLERANCE) <= card_gib - margin_gib(card_gib)


def recommendation(ctx: Context, card_gib: float) -> str:
    est = estimates(ctx)
    if not est:
        return "no estimate (architecture unknown)"
    if ctx.target.ranks > 1 and ctx.shape is not None:  # several ranks: one card, or sharded, or neither
        return sharded_advice(ctx.shape, ctx.cfg, ctx.adapter or "full", tokens_per_micro_batch(ctx),
                               ctx.target.ranks, card_gib)
    card = f"a {card_gib:g} GiB card"
    lora, qlora, full = (est[a].needs_gib for a in ("lora", "qlora", "full"))
    if ctx.adapter is None:
        if fits(est["full"], card_gib):
            return f"a full fine-tune fits {card} (~{full:.1f} GiB); LoRA would need ~{lora:.1f}, QLoRA ~{qlora:.1f} GiB"
        if fits(est["lora"], card_gib):
            return f"a full fine-tune (~{full:.1f} GiB) does not fit {card}; LoRA (~{lora:.1f} GiB) does: set adapter: lora"
        if fits(est["qlora"], card_gib):
            return (f"a full fine-tune (~{full:.1f} GiB) and LoRA (~{lora:.1f} GiB) do not fit {card}; QLoRA "
                    f"(~{qlora:.1f} GiB) does: set adapter: qlora and load_in_4bit: true")
    elif fits(est["lora"], card_gib):
        also = (f"; a full fine-tune (~{full:.1f} GiB) fits too" if fits(est["full"], card_gib)
                else f"; a full fine-tune (~{full:.1f} GiB) does not")
        return (f"LoRA fits {card} (~{lora:.1f} GiB): use it; no quantisation error and faster than QLoRA "
                f"(~{qlora:.1f} GiB){also}")
    elif fits(est["qlora"], card_gib):
        return f"QLoRA (~{qlora:.1f} GiB) fits {card}; LoRA (~{lora:.1f} GiB) does not"
    levers = ["lower sequence_len or micro_batch_size"]
    if not ctx.get("gradient_checkpointing"):
        levers.append("enable gradient_checkpointing")
    if not (ctx.get("liger_fused_linear_cross_entropy") or ctx.get("cut_cross_entropy")):
        levers.append("use a fused cross-entropy (Liger's liger_fused_linear_cross_entropy), which never holds the "
                      "logits")
    return (f"none fits {card} (full fine-tune ~{full:.1f}, LoRA ~{lora:.1f}, QLoRA ~{qlora:.1f} GiB): "
            + ", or ".join(levers))


def sharded_advice(s: Shape, cfg: Mapping[str, Any], adapter: str, tokens: int, ranks: int, card_gib: float) -> str:
    """Whether `adapter` fits one card, fits only sharded over `ranks` ranks, or fits neither (one sentence)."""
    one, sharded = estimate.peak_vram(s, cfg, adapter, tokens), sharding.per_rank(s, cfg, adapter, tokens, ranks)
    what = {"lora": "LoRA", "qlora": "QLoRA", "full": "a full fine-tune"}[adapter]
    if fits(one, card_gib):
        return f"{what} fits one {card_gib:g} GiB card (~{one.needs_gib:.1f} GiB): FSDP is not needed for memory"
    if fits(sharded, card_gib):
        how = "" if sharding.fsdp_of(cfg) is not None else "; set fsdp_version: 2 and an fsdp_config to shard it"
        return (f"{what} fits no single {card_gib:g} GiB card (~{one.needs_gib:.1f} GiB) but fits sharded over "
                f"{ranks} ranks (~{sharded.needs_gib:.1f} GiB per rank){how}")
    return (f"{what} fits neither one {card_gib:g} GiB card (~{one.needs_gib:.1f} GiB) nor sharded over {ranks} ranks "
            f"(~{sharded.needs_gib:.1f} GiB per rank): add ranks, or use QLoRA, a shorter sequence_len or a "
            f"smaller micro_batch_size")
