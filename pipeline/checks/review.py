"""One config, every check: axolotl's schema, the data, the rules; and the facts a person reads beside
the findings (rows, steps, warmup, trainable parameters, a peak-VRAM estimate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from pipeline.checks import compute_plan, data, estimate, hub_rows, lengths, matrix_lookup, rules, shapes, trained  # noqa: F401 - rules registers every config rule
from pipeline.checks.architecture import architecture
from pipeline.checks.context import Context, Report, Schedule, quiet
from pipeline.checks.memory import estimates, recommendation
from pipeline.checks.plugins import plugin_schemas
from pipeline.checks.registry import CHECKS
from pipeline.checks.registry import severity as severity_of
from pipeline.checks.schedule import schedule
from pipeline.checks.schema import axolotl_validation, drop_covered, unknown_keys
from pipeline.checks.sharding import fsdp_of
from pipeline.checks.target import Target, target_for
from pipeline.core.config import PIPELINE_KEY, LoadedConfig
from pipeline.core.errors import Finding
from pipeline.core.section import LOSS_WEIGHTINGS

T = TypeVar("T")


def inspect(loaded: LoadedConfig, target: Target | None = None) -> Report:
    cfg = {k: v for k, v in loaded.data.items() if k != PIPELINE_KEY}
    target = target or target_for(loaded)
    where = str(loaded.path)
    found: list[Finding] = []
    if (cloud := _cloud_keys(cfg)) and not cfg.get("base_model"):
        found.append(Finding(where, loaded.line(cloud[0]), "not-a-training-config",
                             f"this is a launcher file for `axolotl train CONFIG --cloud {loaded.path.name}` "
                             f"({', '.join(cloud)}), not a training config; check the training config instead"))
        return Report(where, found, {})

    mixins, problems = plugin_schemas(loaded, cfg)
    found += problems
    found += unknown_keys(loaded, cfg, mixins, target)
    axo, problems = axolotl_validation(loaded, cfg, target, mixins)
    found += problems

    ctx = Context(loaded, cfg, axo, target)
    arch, problem = architecture(loaded, cfg)
    if problem:
        found.append(problem)
    if arch is not None:
        try:
            with quiet():  # transformers' remarks on a published file (Llama 4's rope factors) are not the user's
                ctx.shape = shapes.shape(arch)
            if ctx.shape.total_params <= 0:  # `hidden_size: 0` builds a model of nothing to estimate
                raise ValueError("the model it describes has no parameters")
        except Exception as exc:  # noqa: BLE001 - a model type transformers cannot build (its own code, a typo)
            ctx.shape = None
            found.append(Finding(where, loaded.line("base_model"), "architecture-unknown",
                                 f"transformers cannot build the model from its config.json ({type(exc).__name__}: "
                                 f"{str(exc)[:200]}): parameter counts, the memory estimate and the context-length "
                                 f"check are skipped", "warning"))
    ctx.sets, problems = data.check(loaded, axo or cfg)
    found += problems
    ctx.hub_rows = unless_rejected(ctx, lambda: hub_rows.for_config(axo or cfg), [])
    found += lengths.check(loaded, axo or cfg, ctx.sets)  # measures the sets' token lengths in place
    ctx.schedule = unless_rejected(ctx, lambda: schedule(ctx), Schedule())

    for rule_id, severity, fn in CHECKS:
        nothing: list[tuple[tuple[str | int, ...], str]] = []
        said = unless_rejected(ctx, lambda: list(fn(ctx)), nothing)  # noqa: B023 - called at once, in this iteration
        for keys, message in said:
            found.append(Finding(where, loaded.line(*keys) if keys else None, rule_id, message, severity))
    found = [replace(f, severity=severity_of(f.rule, f.severity)) for f in drop_covered(found)]
    return Report(where, found, facts(ctx))


def unless_rejected(ctx: Context, compute: Callable[[], T], fallback: T) -> T:
    """compute(); where axolotl rejected the config, `fallback` when it fails: such a config may hold a value
    of any type anywhere (`lora_r: ' '`), its axolotl-validation finding already names it, and a rule or a
    fact computed from it says nothing more."""
    if ctx.axo is not None:
        return compute()
    try:
        return compute()
    except Exception:  # noqa: BLE001 - any value of a rejected config may be of any type
        return fallback


#: keys of axolotl's cloud launcher files (axolotl/cli/cloud: modal and baseten), which a training config has not
CLOUD_KEYS = ("provider", "gpu", "gpu_count", "node_count", "secrets", "volumes", "dockerfile_commands",
              "memory_preprocess", "timeout_preprocess")


def _cloud_keys(cfg: dict[str, Any]) -> list[str]:
    return [k for k in CLOUD_KEYS if k in cfg]


def facts(ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {
        "target": ctx.target.as_dict() | {"described": ctx.target.describe()},
        "base_model": ctx.cfg.get("base_model"),
        "adapter": ctx.adapter or "full fine-tune",
        "data": [d.stats() for d in ctx.sets],
        "hub_data": [r.as_dict() for r in ctx.hub_rows],
        "schedule": ctx.schedule.as_dict(),
        "loss": _loss_facts(ctx),
    }
    out["compat"] = unless_rejected(ctx, lambda: matrix_lookup.facts(ctx), dict[str, Any]())
    if ctx.shape is not None:
        out.update(unless_rejected(ctx, lambda: _model_facts(ctx), dict[str, Any]()))
    return out


def _loss_facts(ctx: Context) -> dict[str, Any]:
    """How a step's loss weighs its tokens (`pipeline.loss_weighting`), and the split it applies to."""
    section = ctx.loaded.section
    weighting = section.get("loss_weighting") if section.get("loss_weighting") in LOSS_WEIGHTINGS else LOSS_WEIGHTINGS[0]
    return {"weighting": weighting, "micro_batch": ctx.get("micro_batch_size", 1),
            "accumulation": ctx.get("gradient_accumulation_steps", 1)}


def _model_facts(ctx: Context) -> dict[str, Any]:
    """Trainable parameters and the memory estimates, from the model's shape."""
    assert ctx.shape is not None
    # a full fine-tune trains every weight
    t = trained.trainable(ctx.shape, ctx.cfg) if ctx.adapter else trained.Trainable(0)
    count = t.total if ctx.adapter else ctx.shape.total_params
    out: dict[str, Any] = {"params": {"total": ctx.shape.total_params, "trainable": count, "lora": t.lora,
                                      "modules_to_save": t.saved,
                                      "trainable_percent": round(100 * count / ctx.shape.total_params, 3)}}
    out["memory"] = {a: e.as_dict() for a, e in estimates(ctx).items()}
    if ctx.target.ranks > 1 and fsdp_of(ctx.cfg) is not None:
        out["memory"]["per"] = f"per rank, FSDP over {ctx.target.ranks} ranks"
    if ctx.target.memory_gib:
        out["memory"]["gpu_mem_gib"] = ctx.target.memory_gib
        out["memory"]["recommendation"] = recommendation(ctx, ctx.target.memory_gib)
    if (chosen := compute_plan.for_check(ctx)) is not None:  # what `pipeline.compute: fastest` would choose
        out["compute"] = chosen
    return out
