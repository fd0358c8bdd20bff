"""Optimizer and warmup steps as axolotl will compute them, from the data's measured token lengths."""

from __future__ import annotations

import math

from pipeline.checks.context import Context, Schedule, as_float, as_int, quiet


def schedule(ctx: Context) -> Schedule:
    """Steps and warmup as axolotl will compute them: exact where token lengths were measured; where only
    upper bounds of the lengths are known (no tokenizer), upper bounds (`exact` False)."""
    mbs = as_int(ctx.get("micro_batch_size", 1), 1)
    ga = as_int(ctx.get("gradient_accumulation_steps", 1), 1)
    epochs = as_float(ctx.get("num_epochs", 1), 1.0)
    seq = as_int(ctx.get("sequence_len", 2048), 2048)
    s = Schedule(batch=max(mbs, 1) * max(ga, 1) * ctx.target.ranks)  # every rank takes its own micro-batches
    train = [d for d in ctx.sets if d.key == "datasets"]
    local = [e for e in (ctx.cfg.get("datasets") or []) if isinstance(e, dict)]
    if ctx.get("val_set_size"):
        s.note = "val_set_size carves the validation rows at run time: steps not computed"
    elif train and len(train) == len(local):
        drops = str(ctx.get("excess_length_strategy") or "drop") != "truncate"
        rows = sum(d.count for d in train)
        if all(d.lengths for d in train):
            lengths = [n for d in train for n in d.lengths or []]
            if drops:
                lengths = [n for n in lengths if n <= seq]
            rows = len(lengths)
            if ctx.get("sample_packing"):
                s.sequences = _packed(lengths, mbs * seq, ctx) if lengths else 0
                s.note = "packed sequences from axolotl's multipack sampler on the measured token lengths"
        elif ctx.get("sample_packing") and all(d.bounds for d in train):
            # rows longer than seq are dropped (fewer bins) or fit: min(bound, seq) bounds both cases; First
            # Fit leaves at most one bin half empty, so bins <= 2 x tokens / capacity + 1 (plus bins closed
            # by the sample count cap)
            bound = sum(min(n, seq) for d in train for n in d.bounds or [])
            cap = as_int(ctx.get("sample_packing_bin_size", 200), 200)
            s.sequences = min(rows, 2 * bound // (mbs * seq) + 1 + math.ceil(rows / max(cap, 1)))
            s.exact = False
            s.note = ("upper bounds: token lengths unknown (no tokenizer), bounded by the bytes of each "
                      "rendered row")
        elif ctx.get("sample_packing"):
            s.note = "sample_packing: steps need token lengths (tokenizer not available)"
        s.train_rows = rows
        if not ctx.get("sample_packing"):
            s.sequences = rows
        if s.sequences is not None:
            if ctx.get("sample_packing"):
                s.steps_per_epoch = max(1, s.sequences * mbs // s.batch)
                s.total_steps = int(math.floor(s.steps_per_epoch * epochs))
            else:
                s.steps_per_epoch = math.ceil(rows / s.batch) if rows else 0
                s.total_steps = math.ceil(rows * epochs / s.batch) if rows else 0
    s.total_exact = s.exact
    if ctx.cfg.get("max_steps"):
        s.total_steps = as_int(ctx.cfg["max_steps"], 0)
        s.total_exact = True
    s.warmup_steps = _warmup(ctx, s.total_steps)
    return s



def _packed(lengths: list[int], capacity: int, ctx: Context) -> int:
    """Packed sequences per epoch from axolotl's own sampler (as calculate_total_num_steps builds it)."""
    import numpy as np
    from axolotl.utils.samplers.multipack import MultipackBatchSampler
    from torch.utils.data import SequentialSampler

    with quiet():
        sampler = MultipackBatchSampler(
            sampler=SequentialSampler(range(len(lengths))), lengths=np.array(lengths), batch_size=1,
            batch_max_len=capacity, group_size=as_int(ctx.get("sample_packing_group_size", 100_000), 100_000),
            bin_size=as_int(ctx.get("sample_packing_bin_size", 200), 200), drop_last=True, num_processes=1)
        return len(sampler)



def _warmup(ctx: Context, total: int | None) -> int | None:
    """axolotl's warmup steps (core/builders/base.py _configure_warmup_and_logging)."""
    if ctx.cfg.get("warmup_steps") is not None:
        steps = as_int(ctx.cfg["warmup_steps"], 0)
    elif total is None:
        return None
    elif ctx.cfg.get("warmup_ratio") is not None:
        steps = max(int(as_float(ctx.cfg["warmup_ratio"], 0.0) * total), 0)
    else:
        steps = min(int(0.03 * total), 100)
    return 2 if steps == 1 else steps
