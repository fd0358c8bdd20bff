"""Everything checked before a run, with no GPU and no model weights: one entry, `run`.

`pipeline check`, `pipeline smoke` and `pipeline train` all call `run` on the config *after* the
command's `--set` overrides, for the target the run will really have, so a run never starts on a config
that the check would have refused (a `--set bf16=true` on a CPU fails here, in the launching process, in
seconds, before any run folder exists).

What it looks at, in order (each a module of this package):
1. the `pipeline:` section (`pipeline.core.section`: the project's own settings);
2. axolotl's own schema and validation (`schema`, with the config's `plugins` read from source);
3. the data the config names (`data`), then its token lengths (`lengths`);
4. the rules for what axolotl accepts without a word (`rules/`), using the model's shape
   (`architecture`, `shapes`), the schedule (`schedule`) and the memory estimate (`estimate`, `memory`),
   for the target (`target`; cards named with `--gpu`: `cards`).

Every rule's id, severity and description live in `registry`; the facts a person reads beside the
findings come from `review`. A config that passed is remembered (`remembered`), keyed by its content,
the overrides, every data file's content, the checking code and the target.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline.core import config, section
from pipeline.core.errors import Finding, UserError

if TYPE_CHECKING:
    from pipeline.checks.compute import Reach


def run(path: str | Path | config.LoadedConfig, *, overrides: dict[str, Any] | None = None, device: str = "auto",
        gpu: str | None = None, gpu_mem_gib: float | None = None, remember: Path | None = None,
        for_run: bool = False, gpus: int = 1, nnodes: int = 1) -> Any:
    """Check one config after `overrides`; return its Report (findings and facts).

    path: the config file (or one already loaded)
    overrides: `--set` values, applied before anything is checked
    device, gpu, gpu_mem_gib: the target (see `target.target_for`)
    gpus, nnodes: GPUs per node and nodes of the run (axolotl's multi-GPU validation, FSDP's sharding)
    remember: a folder of remembered results; a hit returns the findings without facts
    for_run: the run happens here, next (smoke, train): what this machine lacks stops it
      (`registry.STOPS_A_RUN`), and a model it cannot load is the one line returned, in seconds
    """
    from pipeline.checks.context import Report

    try:
        loaded = with_overrides(path if isinstance(path, config.LoadedConfig) else config.load(path), overrides)
    except UserError as exc:
        return Report(str(path.path if isinstance(path, config.LoadedConfig) else path), exc.findings, {})
    found = section.validate(loaded)

    from pipeline.checks import loading, remembered
    from pipeline.checks.review import inspect
    from pipeline.checks.target import target_for

    # asked every time, never remembered: the hub, the cache and the token change under a config
    cfg = {k: v for k, v in loaded.data.items() if k != config.PIPELINE_KEY}
    model = [_for(f, for_run) for f in loading.model(loaded, cfg)]
    found += model
    if for_run and errors(model):
        return Report(str(loaded.path), found, {})  # nothing can start: the rest would only delay saying so
    found += loading.remote_code(loaded, cfg)

    target = replace(target_for(loaded, device, gpu, gpu_mem_gib), gpus=gpus, nnodes=nnodes)
    key = remembered.key(loaded, loaded.overrides, target.as_dict()) if remember is not None else None
    if key is not None and remember is not None and (hit := remembered.recall(remember, key)) is not None:
        facts = {"schedule": hit.schedule} if hit.schedule else {}  # what a run's computation plan reads
        return Report(str(loaded.path), found + [_for(f, for_run) for f in hit.findings], facts)
    report = inspect(loaded, target)
    if key is not None and remember is not None and not errors(report.findings):
        files = [d["resolved"] for d in report.facts.get("data", []) if d.get("resolved")]
        remembered.store(remember, key, report.findings, files, report.facts.get("schedule"))
    said = {f.rule for f in found}
    report.findings[:] = found + [_for(f, for_run) for f in report.findings
                                  if not ("model-unavailable" in said and f.rule in MOOT_WITHOUT_A_MODEL)]
    return report


#: what a model that cannot be loaded at all makes moot
MOOT_WITHOUT_A_MODEL = ("architecture-unknown", "tokenizer-unavailable")


def _for(f: Finding, for_run: bool) -> Finding:
    """A finding as the command sees it: a run here is stopped by what this machine lacks."""
    from pipeline.checks.registry import STOPS_A_RUN

    return replace(f, severity="error") if for_run and f.rule in STOPS_A_RUN else f


class Checked(NamedTuple):
    """A config as a run will see it, checked: its warnings, and what the check knows of what it trains that the
    run's computation plan reads (`compute.Reach`: the loss weighting, the sequences an epoch, the steps)."""

    config: config.LoadedConfig
    warnings: list[Finding]
    reach: Reach


def for_run(path: str | Path, overrides: dict[str, Any] | None) -> Checked:
    """The one loader of smoke and train: load -> `--set` overrides -> check for a run here (remembered by
    content under the cache) -> resolve without building a model. Returns the config as the run will see it,
    the check's warnings and its Reach; every problem found raises one UserError (nothing is written)."""
    from pipeline.core.cache import cache_dir

    loaded = with_overrides(config.load(path), overrides)
    report = run(loaded, remember=cache_dir() / "checks", for_run=True)
    if report.errors:
        raise UserError(*report.errors)  # resolving would report the same problems again
    config.resolve(loaded, build_models=False)  # data paths and model names, without building
    return Checked(loaded, report.warnings, reach_of(loaded, report.facts.get("schedule") or {}))


def reach_of(loaded: config.LoadedConfig, schedule: dict[str, Any]) -> Reach:
    """What a checked config trains, for its computation plan: the weighting, and the schedule's sequences an
    epoch (exact where token lengths were measured) and planned steps (where exact)."""
    from pipeline.checks.compute import Reach

    return Reach.of(section.loss_weighting(loaded), schedule)


def with_overrides(loaded: config.LoadedConfig, overrides: dict[str, Any] | None) -> config.LoadedConfig:
    """The config as the run will see it: `--set` values applied (the user's file is not touched)."""
    if not overrides:
        return loaded
    return replace(loaded, data=config.apply_overrides(loaded.data, overrides, where=str(loaded.path)),
                   overrides=dict(overrides))


def errors(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.severity == "error"]
