"""The project's own `pipeline:` section of a config, owned here: its schema, its checks, its values.

axolotl never sees this section (it is removed from the config axolotl runs). Everything the project
reads from it is declared in SCHEMA below, so a misspelt key is found by `pipeline check`, `smoke` and
`train` alike, before any run, with the nearest valid name and its line:

    pipeline:
      smoke:
        max_steps: 3               # optimizer steps of `pipeline smoke` (default 3; --max-steps wins)
      bounds:                      # judged by smoke (and recorded by train): see pipeline.core.bounds
        peak_vram_gib: 20
        final_loss: [0.5, 8.0]
      evaluate:                    # read by `pipeline evaluate`
        gates: {val_loss_drop: 0.5, chrf_min: 60}
        style_terms: data/style_terms.txt
        heldout: data/general_heldout.txt
        max_new_tokens: 160
      compute: fastest             # how the same training is computed: as_written (default) or the fastest
                                   # that fits the card (pipeline.checks.compute)
      compute_gpu_mem: 32GiB       # choose for this card's memory rather than the GPU here
      loss_weighting: per-token    # each trainable token of a global batch weighs the same, however it is split
                                   # into micro batch x accumulation (default); per-micro-batch: axolotl 0.19's
                                   # mean per micro batch, averaged over accumulation (pipeline.in_axolotl.loss)

`--set pipeline.bounds.peak_vram_gib=30` reaches this section like any other key: the stages check and
use the config after the overrides. A new setting is one entry in SCHEMA (and a row in docs/check.md).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.core import bounds as bounds_mod
from pipeline.core.config import PIPELINE_KEY, LoadedConfig, find_data_file
from pipeline.core.errors import Finding, UserError

#: gate name -> (what it asks, whether the value is a minimum or a maximum)
GATES: dict[str, tuple[str, str]] = {
    "val_loss_drop": ("tuned validation loss at least {v} below the base's", "min"),
    "val_loss_max": ("tuned validation loss at most {v}", "max"),
    "heldout_ppl_ratio_max": ("tuned / base held-out perplexity at most {v}", "max"),
    "chrf_min": ("tuned chrF at least {v}", "min"),
    "style_min": ("share of tuned generations with a coined term at least {v}", "min"),
    "content_min": ("tuned content-word recall at least {v}", "min"),
}
DEFAULT_GATES = {"val_loss_drop": 0.0}
#: `pipeline.loss_weighting` values: each trainable token of a global batch weighs the same (default, the
#: pipeline.in_axolotl.loss plugin), or axolotl 0.19's own mean per micro batch averaged over accumulation (to
#: reproduce a run made before pipeline weighted per token)
LOSS_WEIGHTINGS = ("per-token", "per-micro-batch")
DEFAULT_TERMS = "data/style_terms.txt"
DEFAULT_HELDOUT = "data/general_heldout.txt"

Path_ = tuple[str | int, ...]
#: a value check: returns what is wrong with the value, or None
Check = Callable[[Any], str | None]


def _positive_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return None if ok else f"must be a whole number >= 1, not {value!r}"


def _number(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # NaN != NaN
    return None if ok else f"must be a number, not {value!r}"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else f"must be a path, not {value!r}"


def _final_loss(value: Any) -> str | None:
    if _number(value) is None:
        return None
    if isinstance(value, list) and len(value) == 2 and all(_number(x) is None for x in value):
        return None if value[0] <= value[1] else f"must be [min, max] with min <= max, not {value!r}"
    return f"must be a number (max) or [min, max], not {value!r}"


def _gate_value(value: Any) -> str | None:
    return _number(value)


def _compute(value: Any) -> str | None:
    return None if value in ("as_written", "fastest") else f"must be as_written or fastest, not {value!r}"


def _weighting(value: Any) -> str | None:
    return None if value in LOSS_WEIGHTINGS else f"must be {' or '.join(LOSS_WEIGHTINGS)}, not {value!r}"


def _memory(value: Any) -> str | None:
    from pipeline.core.cards import parse_memory

    try:
        parse_memory(str(value))
    except ValueError:
        return f"must be a memory size such as 32GiB or 24GB, not {value!r}"
    return None


#: every key of the section: a nested mapping of key -> sub-schema, or key -> value check;
#: ("*", check) under a key means "any name from NAMES[key], each checked so"
SCHEMA: dict[str, Any] = {
    "smoke": {"max_steps": _positive_int},
    "bounds": {name: (_final_loss if name == "final_loss" else _number) for name in bounds_mod.KNOWN},
    "evaluate": {
        "gates": {name: _gate_value for name in GATES},
        "style_terms": _text,
        "heldout": _text,
        "max_new_tokens": _positive_int,
    },
    "compute": _compute,
    "compute_gpu_mem": _memory,
    "loss_weighting": _weighting,
}

#: the rule id for an unknown key / a wrong shape, by where it is: documented ids (docs/check.md), a public
#: interface, so they keep their own names rather than one pattern
_UNKNOWN_RULE: dict[Path_, str] = {("bounds",): "bounds-unknown", ("evaluate", "gates"): "eval-gates", ("evaluate",): "eval-settings"}
_SHAPE_RULE: dict[Path_, str] = {("bounds",): "bounds-shape", ("evaluate", "gates"): "eval-gates", ("evaluate",): "eval-settings"}


def raw(loaded: LoadedConfig) -> Any:
    return loaded.data.get(PIPELINE_KEY)


def validate(loaded: LoadedConfig) -> list[Finding]:
    """Every problem in the section: unknown keys (with the nearest name), wrong shapes, paths that are
    named but missing. An absent section is valid (every setting has a default)."""
    found: list[Finding] = []
    value = raw(loaded)
    if value is None:
        return found
    _walk(loaded, SCHEMA, value, (), found)
    section = value if isinstance(value, dict) else {}
    ev = section.get("evaluate")
    if isinstance(ev, dict):
        for key in ("style_terms", "heldout"):
            wanted = ev.get(key)
            if isinstance(wanted, str) and wanted.strip() and find_data_file(wanted, loaded.path) is None:
                found.append(Finding(str(loaded.path), loaded.line(PIPELINE_KEY, "evaluate", key), "eval-data-missing",
                                     f"{key} file {wanted!r} not found (looked in {Path.cwd()} and beside the "
                                     f"config); fix pipeline.evaluate.{key}"))
    return found


def _rule(table: Mapping[Path_, str], path: Path_, default: str) -> str:
    for n in range(len(path), 0, -1):
        if path[:n] in table:
            return table[path[:n]]
    return default


def _walk(loaded: LoadedConfig, schema: dict[str, Any], value: Any, path: Path_, found: list[Finding]) -> None:
    where = ".".join(str(p) for p in (PIPELINE_KEY, *path))
    line = loaded.line(PIPELINE_KEY, *path)
    if not isinstance(value, dict):
        example = ", ".join(f"{k}: ..." for k in list(schema)[:2])
        found.append(Finding(str(loaded.path), line, _rule(_SHAPE_RULE, path, "pipeline-shape"),
                             f"{where} must be a mapping ({{{example}}}), not {value!r}; fix {where}"))
        return
    for key, sub in value.items():
        key_s = str(key)
        key_line = loaded.line(PIPELINE_KEY, *path, key_s)
        if key_s not in schema:
            near = difflib.get_close_matches(key_s, list(schema), n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(schema)}"
            found.append(Finding(str(loaded.path), key_line, _rule(_UNKNOWN_RULE, path, "pipeline-unknown"),
                                 f"{where} has no setting {key_s!r} (it would be ignored); {hint}"))
            continue
        spec = schema[key_s]
        if isinstance(spec, dict):
            _walk(loaded, spec, sub, (*path, key_s), found)
        elif (problem := spec(sub)) is not None:
            found.append(Finding(str(loaded.path), key_line, _rule(_SHAPE_RULE, (*path, key_s), "pipeline-shape"),
                                 f"{where}.{key_s} {problem}; fix it"))


def _checked(loaded: LoadedConfig) -> dict[str, Any]:
    if problems := validate(loaded):
        raise UserError(*problems)
    value = raw(loaded)
    return value if isinstance(value, dict) else {}


def smoke_steps(loaded: LoadedConfig) -> int | None:
    """`pipeline.smoke.max_steps`, or None where unset."""
    return (_checked(loaded).get("smoke") or {}).get("max_steps")


def loss_weighting(loaded: LoadedConfig) -> str:
    """`pipeline.loss_weighting` (validated): "per-token" unless the config asks for "per-micro-batch"."""
    return str(_checked(loaded).get("loss_weighting") or LOSS_WEIGHTINGS[0])


def bounds(loaded: LoadedConfig) -> dict[str, Any]:
    """`pipeline.bounds` (validated)."""
    return dict(_checked(loaded).get("bounds") or {})


def evaluate_settings(loaded: LoadedConfig, shown: str | None = None) -> dict[str, Any]:
    """`pipeline.evaluate` with defaults applied and its files found; UserError naming `shown` (the
    user's config path, whose lines these are) when anything is wrong."""
    section = _checked(loaded).get("evaluate") or {}
    shown = shown or str(loaded.path)
    gates = section.get("gates")
    paths: dict[str, Path] = {}
    problems: list[Finding] = []
    for key, default in (("style_terms", DEFAULT_TERMS), ("heldout", DEFAULT_HELDOUT)):
        wanted = str(section.get(key) or default)
        found = find_data_file(wanted, Path(shown))
        if found is None:
            problems.append(Finding(shown, loaded.line(PIPELINE_KEY, "evaluate", key)
                                    or loaded.line(PIPELINE_KEY, "evaluate"), "eval-data-missing",
                                    f"{key} file {wanted!r} not found (looked in {Path.cwd()} and beside the "
                                    f"config); set pipeline.evaluate.{key}"))
        else:
            paths[key] = found
    if problems:
        raise UserError(*problems)
    return {"gates": dict(gates) if gates else dict(DEFAULT_GATES), "gates_configured": bool(gates),
            "max_new_tokens": section.get("max_new_tokens"), **paths}
