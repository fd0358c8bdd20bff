"""Rules on evaluation settings: evaluation that never happens, or that axolotl rejects."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.checks.context import Context, as_float
from pipeline.checks.registry import rule


def _no_eval_data(cfg: Mapping[str, Any]) -> bool:
    return not as_float(cfg.get("val_set_size") or 0, 0) and not cfg.get("test_datasets")



@rule("eval-without-data", "error", "eval_steps or eval_strategy with val_set_size 0 and no test_datasets")
def _eval_without_data(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    cfg = ctx.cfg
    # axolotl's check_evals rejects it when val_set_size is 0; unset, transformers' Trainer does
    if (cfg.get("eval_steps") or cfg.get("eval_strategy")) and cfg.get("eval_strategy") != "no" \
            and _no_eval_data(cfg):
        key = "eval_steps" if cfg.get("eval_steps") else "eval_strategy"
        yield (key,), (f"{key} is set but val_set_size is 0 and there are no test_datasets: axolotl rejects it "
                       f"(or, with val_set_size unset, the trainer stops when it builds the evaluation); add "
                       f"test_datasets (a pre-split validation file) or a val_set_size, or remove {key}")



@rule("eval-never-runs", "warning", "evals_per_epoch with val_set_size 0 and no test_datasets (a no-op)")
def _eval_never_runs(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.cfg.get("evals_per_epoch") and not ctx.cfg.get("eval_steps") and _no_eval_data(ctx.cfg):
        yield ("evals_per_epoch",), ("evals_per_epoch is set but val_set_size is 0 and there are no test_datasets: "
                                     "axolotl accepts it and never evaluates; add test_datasets or a val_set_size "
                                     "to have evaluations, or remove evals_per_epoch")



@rule("eval-once-dropped", "warning", "evals_per_epoch x num_epochs = 1 with evaluation data: axolotl never "
                                        "evaluates")
def _eval_once_dropped(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    # axolotl's normalize_config turns evals_per_epoch into eval_steps = 1 / (evals_per_epoch * num_epochs) and
    # keeps it only below 1 ("prevent evals on every step"); at exactly 1.0 (one evaluation a run) it sets
    # nothing, so the trainer's eval_strategy stays "no". Measured: the tiny config at num_epochs 1 logged no
    # eval_loss with evals_per_epoch 1 and three with evals_per_epoch 2 (docs/check.md).
    cfg = ctx.cfg
    per, epochs = as_float(cfg.get("evals_per_epoch") or 0, 0), as_float(cfg.get("num_epochs") or 1, 1)
    if per and per * epochs == 1.0 and not cfg.get("eval_steps") and not cfg.get("eval_strategy") \
            and not _no_eval_data(cfg):
        yield ("evals_per_epoch",), (f"evals_per_epoch {cfg.get('evals_per_epoch')} with num_epochs "
                                     f"{cfg.get('num_epochs', 1)} asks for one evaluation a run, which axolotl drops "
                                     f"(it keeps eval_steps only below 1.0): the run never evaluates and logs no "
                                     f"validation loss; set evals_per_epoch: 2 (mid-run and at the end) or "
                                     f"eval_steps: N (every N optimizer steps)")



@rule("test-datasets-with-val-set-size", "error", "test_datasets together with a non-zero val_set_size")
def _test_and_val(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.cfg.get("test_datasets") and as_float(ctx.cfg.get("val_set_size") or 0, 0):
        yield ("val_set_size",), ("val_set_size is non-zero while test_datasets is set (axolotl rejects the "
                                  "pair); set val_set_size: 0 to evaluate on test_datasets")



@rule("eval-steps-beyond-run", "warning", "eval_steps larger than the run's optimizer steps")
def _eval_beyond(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    every, total = ctx.cfg.get("eval_steps"), ctx.schedule.total_steps
    if isinstance(every, int) and not isinstance(every, bool) and total and every > total:
        steps = f"{total}" if ctx.schedule.total_exact else f"at most {total}"
        yield ("eval_steps",), (f"eval_steps {every} is beyond the run's {steps} optimizer steps: it evaluates once "
                                f"before training and never again; use eval_steps <= {total} or evals_per_epoch")
