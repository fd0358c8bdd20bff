"""When and for which card `pipeline.compute` is decided (`pipeline.checks.compute` makes the choice itself):
`plan` decides it once for a run (smoke, train), from the checked and resolved config, for the card the run
has; `for_check` shows what a run would choose, for the card `pipeline check` checks for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.checks import shapes
from pipeline.checks.compute import Choice, Reach, choose
from pipeline.core import cards


def card_for(settings: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """The card a run chooses for: `pipeline.compute_gpu_mem` where set, else the GPU here (None, None: none)."""
    wanted = settings.get("compute_gpu_mem")
    if wanted is not None:
        return None, cards.parse_memory(str(wanted))
    local = cards.local_card()
    return local if local is not None else (None, None)


def apply(loaded: Any, axolotl_cfg: Mapping[str, Any], settings: Mapping[str, Any],
          reach: Reach | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The config a run hands axolotl and the record of the choice (None unless `compute: fastest`).

    loaded: the user's config (config.LoadedConfig); axolotl_cfg: as resolved for the run; settings: its
    validated `pipeline:` section; reach: what the check knows the run trains (None: unknown, so the split of
    the global batch stays as written)."""
    from pipeline.checks.architecture import architecture
    from pipeline.core.gpus import cuda_answers

    cfg = dict(axolotl_cfg)
    if settings.get("compute", "as_written") != "fastest":
        return cfg, None
    if not cuda_answers():  # the run happens here: fused GPU kernels would stop a CPU run
        return cfg, Choice(None, None, note="no GPU here: a CPU run is computed as written").as_dict()
    card, card_gib = card_for(settings)
    # the model as the user named it (a pipeline:// model is known by name before it is built), else as resolved
    named = {k: loaded.data[k] for k in ("base_model", "base_model_config") if loaded.data.get(k)}
    arch, _ = architecture(loaded, {**cfg, **named})
    if arch is None:
        arch, _ = architecture(loaded, cfg)
    shape = None
    if arch is not None:
        try:
            shape = shapes.shape(arch)
        except Exception:  # noqa: BLE001 - a model transformers cannot build: the check has said so
            shape = None
    adapter = str(cfg.get("adapter")) if cfg.get("adapter") in ("lora", "qlora") else "full"
    choice = choose(shape, cfg, adapter, card_gib, card=card, bound_gib=bound_of(settings), reach=reach)
    return {**cfg, **choice.settings}, choice.as_dict()


def bound_of(settings: Mapping[str, Any]) -> float | None:
    """`pipeline.bounds.peak_vram_gib` where it is a number: the peak the config promises to keep."""
    bounds = settings.get("bounds")
    bound = bounds.get("peak_vram_gib") if isinstance(bounds, Mapping) else None
    return float(bound) if isinstance(bound, (int, float)) and not isinstance(bound, bool) else None


def for_check(ctx: Any) -> dict[str, Any] | None:
    """What a run of the checked config would choose (pipeline.checks.context.Context), for the card the run
    chooses for: pipeline.compute_gpu_mem, else the check's --gpu-mem, else the GPU here. None where no card
    is known and the config does not ask for the fastest computation."""
    settings = ctx.loaded.section
    asked = settings.get("compute") == "fastest"
    if ctx.target.device != "gpu" or ctx.shape is None:
        return None
    card, card_gib = ctx.target.gpu, ctx.target.memory_gib
    if settings.get("compute_gpu_mem") is not None:
        try:
            card, card_gib = None, cards.parse_memory(str(settings["compute_gpu_mem"]))
        except ValueError:
            return None  # the section's own check reports it
    elif card_gib is None and ctx.target.why == "the GPU here" and (local := cards.local_card()) is not None:
        card, card_gib = local
    if card_gib is None and not asked:
        return None
    lengths = [n for d in ctx.sets if d.key == "datasets" for n in (d.lengths or [])]
    adapter = ctx.adapter or "full"
    reach = Reach.of(str(settings.get("loss_weighting") or "per-token"), ctx.schedule.as_dict())
    choice = choose(ctx.shape, ctx.cfg, adapter, card_gib, card=card, bound_gib=bound_of(settings),
                    max_len=max(lengths) if lengths else None, reach=reach)
    return {**choice.as_dict(), "asked": asked}


def plan(resolved: Any, reach: Reach | None = None) -> tuple[Any, dict[str, Any] | None]:
    """`pipeline.compute`, decided once for a run (smoke, train): the resolved config (config.ResolvedConfig)
    with the chosen settings in its axolotl config, and the record of the choice that the launcher writes
    into the run folder (None unless `compute: fastest`). The launcher never decides it again. reach: the
    check's `compute.Reach` for the run (`checks.for_run`), its planned steps the run's own."""
    from dataclasses import replace

    chosen, record = apply(resolved.source, resolved.axolotl, resolved.settings, reach)
    return replace(resolved, axolotl=chosen), record
