"""Rules on the training settings: adapter and hyperparameter ranges, warmup and batch against the data,
and an output folder that already holds a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.checks.context import Context, as_float, as_int
from pipeline.checks.registry import rule


@rule("qlora-without-4bit", "error", "adapter: qlora without load_in_4bit: true")
def _qlora_4bit(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.cfg.get("adapter") == "qlora" and not ctx.cfg.get("load_in_4bit") and not ctx.cfg.get("merge_lora"):
        yield ("adapter",), "adapter: qlora needs the base loaded in 4 bits (axolotl rejects it); add load_in_4bit: true"



@rule("lora-range", "error", "lora_r, lora_alpha or lora_dropout out of range")
def _lora_range(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if not ctx.adapter:
        return
    r, alpha, dropout = ctx.cfg.get("lora_r"), ctx.cfg.get("lora_alpha"), ctx.cfg.get("lora_dropout")
    if r is not None and as_float(r, 0) < 1:
        yield ("lora_r",), f"lora_r {r!r} must be a whole number >= 1 (8-64 is usual); fix lora_r"
    if alpha is not None and as_float(alpha, 0) <= 0:
        yield ("lora_alpha",), f"lora_alpha {alpha!r} must be positive (often 2 x lora_r); fix lora_alpha"
    if dropout is not None and not 0 <= as_float(dropout, -1) < 1:
        yield ("lora_dropout",), f"lora_dropout {dropout!r} must be in [0, 1) (0.0-0.1 is usual); fix lora_dropout"



@rule("learning-rate-range", "error", "learning_rate that is not a number in (0, 1)")
def _lr_range(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    lr = ctx.cfg.get("learning_rate")
    if lr is not None and not 0 < as_float(lr, -1) < 1:
        yield ("learning_rate",), (f"learning_rate {lr!r} is not a number between 0 and 1 (LoRA uses 1e-5 to 1e-3; "
                                   f"write it as 2.0e-4 or 0.0002); fix learning_rate")



@rule("batch-range", "error", "micro_batch_size, gradient_accumulation_steps or num_epochs below 1")
def _batch_range(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for key in ("micro_batch_size", "gradient_accumulation_steps"):
        value = ctx.cfg.get(key)
        if value is not None and as_int(value, 0) < 1:
            yield (key,), f"{key} {value!r} must be a whole number >= 1; fix {key}"
    epochs = ctx.cfg.get("num_epochs")
    if epochs is not None and as_float(epochs, 0) <= 0 and not ctx.cfg.get("max_steps"):
        yield ("num_epochs",), f"num_epochs {epochs!r} trains nothing; set num_epochs >= 1 or max_steps"



@rule("warmup-longer-than-training", "error", "warmup as long as the whole run, or longer")
def _warmup_long(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    ratio = ctx.cfg.get("warmup_ratio")
    if ratio is not None and as_float(ratio, 0) >= 1:
        yield ("warmup_ratio",), f"warmup_ratio {ratio} warms up for the whole run; use 0.03-0.1"
        return
    total, steps = ctx.schedule.total_steps, ctx.cfg.get("warmup_steps")
    if steps is not None and total and ctx.schedule.total_exact and as_int(steps, 0) >= total:
        yield ("warmup_steps",), (f"warmup_steps {steps} >= the run's {total} optimizer steps: the learning rate never "
                                  f"reaches {ctx.cfg.get('learning_rate')}; use warmup_steps: {max(2, total // 10)} "
                                  f"or warmup_ratio: 0.1")



@rule("warmup-ratio-no-warmup", "warning", "warmup_ratio that rounds down to no warmup on this data")
def _warmup_zero(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    ratio, total = ctx.cfg.get("warmup_ratio"), ctx.schedule.total_steps
    if ratio is not None and 0 < as_float(ratio, 0) < 1 and total and ctx.schedule.warmup_steps == 0:
        steps = f"{total}" if ctx.schedule.total_exact else f"at most {total}"
        yield ("warmup_ratio",), (f"warmup_ratio {ratio} x {steps} optimizer steps rounds down to 0 warmup steps "
                                  f"(axolotl truncates), so the run starts at the full learning rate; set "
                                  f"warmup_steps: 2 or more, or add data")



@rule("batch-larger-than-dataset", "warning", "an effective batch larger than the training set")
def _batch_vs_data(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    s = ctx.schedule
    if s.sequences:
        most, exact = s.sequences, s.exact
        what = "packed sequences" if ctx.get("sample_packing") else "rows"
    else:  # steps not computed (val_set_size carves rows, packing without token lengths, hub data): rows bound it
        train = [d for d in ctx.sets if d.key == "datasets"]
        counted = [r for r in ctx.hub_rows if r.rows is not None]  # a hub split's rows, before axolotl drops any
        entries = [e for e in (ctx.cfg.get("datasets") or []) if isinstance(e, dict)]
        if not (train or counted) or len(train) + len(counted) != len(entries):
            return
        most = sum(d.count for d in train) + sum(r.rows or 0 for r in counted)
        exact = not ctx.get("val_set_size") and not counted
        what = "rows (packed sequences never outnumber rows)" if ctx.get("sample_packing") else "rows"
        if counted:
            what += f" ({', '.join(r.described() for r in counted)})"
    if s.batch > most:
        mbs = max(as_int(ctx.get("micro_batch_size", 1), 1), 1)
        yield ("gradient_accumulation_steps",), (
            f"one optimizer step wants {s.batch} sequences (micro_batch_size x gradient_accumulation_steps) but "
            f"training has {'' if exact else 'at most '}{most} {what}: an epoch is less than one full step; lower "
            f"gradient_accumulation_steps to {max(1, most // mbs)} or less")



@rule("output-dir-exists", "warning", "an output_dir that already holds an earlier run")
def _output_dir(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    out = Path(str(ctx.cfg.get("output_dir") or "./model-out"))
    if out.is_dir() and (contents := sorted(p.name for p in out.iterdir())):
        shown = ", ".join(contents[:3]) + (" ..." if len(contents) > 3 else "")
        yield ("output_dir",), (f"output_dir {out} already holds an earlier run ({shown}): `axolotl train` on this "
                                f"config would write over it (pipeline train writes into its own run folder); point "
                                f"output_dir at a new folder")
