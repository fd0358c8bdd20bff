"""axolotl's own schema: keys it does not know (it drops them silently), with the nearest valid key, and
its own validation (the pydantic model `validate_config` uses), each error turned into a finding.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from typing import Any

from pipeline.checks.context import quiet
from pipeline.checks.target import Target
from pipeline.core.config import PIPELINE_KEY, LoadedConfig
from pipeline.core.errors import Finding


def _schema(mixins: list[type], capabilities: bool) -> type:
    from axolotl.utils.schemas.config import AxolotlConfigWCapabilities, AxolotlInputConfig

    base = AxolotlConfigWCapabilities if capabilities else AxolotlInputConfig
    if not mixins:
        return base
    return type(base.__name__, (base, *mixins), {})



def _dataset_model(cfg: Mapping[str, Any], entry: Mapping[str, Any] | None = None) -> type:
    """The model axolotl's validate_config turns a dataset entry into before validating the config."""
    from axolotl.utils.schemas.datasets import DPODataset, KTODataset, SFTDataset, SyntheticDataset

    rl = cfg.get("rl")
    if rl in ("dpo", "ipo", "simpo"):
        return DPODataset
    if rl == "kto":
        return KTODataset
    return SyntheticDataset if entry is not None and entry.get("type") == "_synthetic" else SFTDataset



def _model_in(annotation: Any) -> type | None:
    """The one pydantic model an annotation holds (through Optional, Annotated, list), if exactly one."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = {m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None}
    return found.pop() if len(found) == 1 else None



def _known(model: type) -> list[str]:
    return [n for name in model.model_fields for n in _known_as(model, name)]  # type: ignore[attr-defined]


def _known_as(model: type, name: str) -> list[str]:
    """A field's name and every alias axolotl's config may spell it with."""
    from pydantic import AliasChoices

    f = model.model_fields[name]  # type: ignore[attr-defined]
    names = [name]
    for alias in (f.alias, f.validation_alias):
        if isinstance(alias, str):
            names.append(alias)
        elif isinstance(alias, AliasChoices):
            names += [c for c in alias.choices if isinstance(c, str)]
    return names


def as_axolotl_reads(section: tuple[str | int, ...], key: str) -> str:
    """The name axolotl judges a key by, after the renames its validators apply to a raw config
    (utils/schemas/validation.py): `fsdp_`-prefixed keys of fsdp_config lose the prefix, with a
    deprecation warning (`check_fsdp_config_kwargs_prefix`)."""
    if section == ("fsdp_config",) and key.startswith("fsdp_") and key != "fsdp_version":
        return key.replace("fsdp_", "")
    return key


#: what axolotl 0.19.0 does when these keys, which it drops, are absent: set to that, a key changes
#: nothing (an `ignored-key` warning, not an error). (section, key) -> the value that takes effect.
DROPPED_DEFAULTS: dict[tuple[str, str], Any] = {
    # fsdp_config keys FSDPConfig does not have; transformers' and accelerate's defaults apply
    ("fsdp_config", "sharding_strategy"): "FULL_SHARD",
    ("fsdp_config", "limit_all_gathers"): True,
    ("fsdp_config", "forward_prefetch"): False,
    ("fsdp_config", "backward_prefetch"): "NO_PREFETCH",
    # DPODataset drops these; prompt_strategies/dpo/chat_template.py falls back to its own defaults
    ("datasets", "message_property_mappings"): {"role": "role", "content": "content"},
    ("datasets", "roles"): {"user": ["user"], "assistant": ["assistant"], "system": ["system"], "tool": ["tool"]},
    # validate_config turns a stepwise entry into an SFTDataset, which drops these; the strategy's defaults
    ("datasets", "step_separator"): "\n",
    ("datasets", "train_on_last_step_only"): False,
}

def _dtype_of(cfg: Mapping[str, Any], target: Target | None) -> str | None:
    """The dtype axolotl trains in from bf16 / fp16: `auto` is bf16 on a card that has it (or an unknown one)."""
    bf16, fp16 = cfg.get("bf16", "auto"), cfg.get("fp16")
    if bf16 is True:
        return "bfloat16"
    if fp16 is True:
        return "float16"
    if bf16 == "auto" and target is not None and target.device == "gpu" and target.bf16 is not False:
        return "bfloat16"
    return None


#: a better hint than the nearest spelling, for keys other trainers use
HINTS = {
    "eta_min": "axolotl's cosine schedule takes cosine_min_lr_ratio (the floor as a fraction of learning_rate)",
    "torch_dtype": "axolotl takes the dtype from bf16 / fp16",
    "adam_eps": "did you mean 'adam_epsilon'?",
}


def _changes_nothing(section: str, key: str, value: Any, cfg: Mapping[str, Any], target: Target | None) -> bool:
    """A dropped key whose value is what happens anyway: empty, or axolotl's effective default."""
    if value is None:
        return True
    if (section, key) == ("", "torch_dtype"):  # axolotl sets the dtype from bf16 / fp16 (normalize_config)
        return str(value).replace("torch.", "") == _dtype_of(cfg, target)
    if (section, key) not in DROPPED_DEFAULTS:
        return False
    default = DROPPED_DEFAULTS[(section, key)]
    if key == "roles" and isinstance(value, Mapping):  # a mapping the default already contains
        pairs = {(str(s), str(t)) for t, sources in value.items() for s in (sources or [])}
        return pairs <= {(s, t) for t, sources in default.items() for s in sources}
    if isinstance(default, str) and isinstance(value, str):
        return value.upper() == default.upper() if section == "fsdp_config" else value == default
    return bool(value == default)



def unknown_keys(loaded: LoadedConfig, cfg: Mapping[str, Any], mixins: list[type],
                 target: Target | None = None) -> list[Finding]:
    """Keys axolotl's schema does not know, at the top level and inside the sections it models."""
    found: list[Finding] = []

    def walk(model: type, value: Mapping[str, Any], path: tuple[str | int, ...]) -> None:
        if model.model_config.get("extra") == "allow":  # type: ignore[attr-defined]
            return
        known = _known(model)
        fields = model.model_fields  # type: ignore[attr-defined]
        for key, sub in value.items():
            key = str(key)
            if not path and key == PIPELINE_KEY:
                continue
            written, key = key, as_axolotl_reads(path, key)
            if key not in known:
                where = "" if not path else " in " + ".".join(str(p) for p in path)
                said = written if written == key else f"{written} ({key} once axolotl drops the fsdp_ prefix)"
                if _changes_nothing(str(path[0]) if path else "", key, sub, cfg, target):
                    found.append(Finding(str(loaded.path), loaded.line(*path, written), "ignored-key",
                                         f"axolotl does not read {said!r}{where}; its value {sub!r} is what "
                                         f"happens without it, so it changes nothing: remove it", "warning"))
                    continue
                near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = HINTS.get(key) or (f"did you mean {near[0]!r}?" if near else "remove it or check the spelling")
                if (section := (str(path[0]) if path else "", key)) in DROPPED_DEFAULTS:
                    hint = f"{DROPPED_DEFAULTS[section]!r} applies instead; remove it (axolotl passes no such setting on)"
                found.append(Finding(str(loaded.path), loaded.line(*path, written), "unknown-key",
                                     f"axolotl does not know {said!r}{where} and silently ignores it; {hint}"))
                continue
            name = next((n for n in fields if key in _known_as(model, n)), key)
            items = list(enumerate(sub)) if isinstance(sub, list) else [(None, sub)]
            for i, item in items:
                if not isinstance(item, Mapping):
                    continue
                if not path and name in ("datasets", "test_datasets"):
                    inner: type | None = _dataset_model(cfg, item)
                else:
                    inner = _model_in(fields[name].annotation)
                if inner is not None:
                    walk(inner, item, (*path, written) if i is None else (*path, written, i))

    walk(_schema(mixins, capabilities=False), cfg, ())
    return found



def _capabilities(target: Target) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """What axolotl's `gpu_capabilities()` would report on the target (None: unknown card)."""
    import torch

    env = {"torch_version": str(torch.__version__).split("+", maxsplit=1)[0]}
    if target.device == "cpu":
        return {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "compute_capability": None}, env
    if target.capability is None:
        return None
    cc = target.capability
    # n_gpu: the GPUs of one node, as axolotl counts them there (its multi-GPU validators read it)
    return {"bf16": cc >= (8, 0), "fp8": cc >= (9, 0), "tf32": cc >= (8, 0), "n_gpu": target.gpus,
            "compute_capability": f"sm_{cc[0]}{cc[1]}"}, env



def axolotl_validation(loaded: LoadedConfig, cfg: Mapping[str, Any], target: Target,
                       mixins: list[type]) -> tuple[dict[str, Any] | None, list[Finding]]:
    """Run axolotl's validation as `axolotl train` does (utils/config validate_config, with the target's
    capabilities); its errors become findings, whatever it raises. Returns the validated config, or None
    if rejected."""
    from pydantic import ValidationError

    found: list[Finding] = []
    body = copy.deepcopy(dict(cfg))
    entries = body.get("datasets")
    if isinstance(entries, list):
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            try:
                with quiet():
                    entries[i] = _dataset_model(cfg, entry)(**entry)
            except ValidationError as exc:
                found += _validation_findings(loaded, cfg, exc, ("datasets", i))
    if found:
        return None, found
    caps = _capabilities(target)
    model = _schema(mixins, capabilities=caps is not None)
    if caps is not None:
        body["capabilities"], body["env_capabilities"] = caps
    try:
        with quiet():
            # axolotl dumps without mode="json" (torch dtypes stay objects); ours must be plain data
            validated = model(**body).model_dump(mode="json", exclude_none=True, fallback=str)
    except ValidationError as exc:
        return None, _validation_findings(loaded, cfg, exc, ())
    except ImportError as exc:  # a validator that needs an optional package (ring_flash_attn, ...)
        return None, [Finding(str(loaded.path), _first_named_line(loaded, cfg, str(exc)), "axolotl-needs-package",
                              f"axolotl's validation needs a package that is not installed here: {exc}; install "
                              f"it where the run happens", "warning")]
    except Exception as exc:  # noqa: BLE001 - whatever axolotl raises (DeprecationWarning, ...) is a finding
        return None, [Finding(str(loaded.path), _first_named_line(loaded, cfg, str(exc)), "axolotl-validation",
                              f"axolotl rejects the config ({type(exc).__name__}): {exc}; fix what it names")]
    return validated, found



def _first_named_line(loaded: LoadedConfig, cfg: Mapping[str, Any], msg: str) -> int | None:
    """The line of the first config key a message names (for checks on the whole config)."""
    named = [w for w in re.findall(r"[a-z][a-z0-9_]+", msg) if w in cfg]
    return loaded.line(named[0]) if named else None



def _validation_findings(loaded: LoadedConfig, cfg: Mapping[str, Any], exc: Any,
                         prefix: tuple[str | int, ...]) -> list[Finding]:
    found = []
    for err in exc.errors():
        # drop pydantic's union and validator tags (SFTDataset, function-after[...]) from the location
        loc = (*prefix, *[p for p in err.get("loc", ())
                          if isinstance(p, int) or not (str(p)[:1].isupper() or "[" in str(p))])
        msg = re.sub(r"^(Value|Assertion) error, ", "", str(err.get("msg", "")))
        line = loaded.line(*loc) if loc else None
        if line is None or not loc:  # a model-level check: point at the first key its message names
            line = _first_named_line(loaded, cfg, msg)
        where = ".".join(str(p) for p in loc)
        found.append(Finding(str(loaded.path), line, "axolotl-validation",
                             f"axolotl rejects {where + ': ' if where else 'the config: '}{msg}; change the config "
                             f"as its message says"))
    return found



#: axolotl errors that a rule of ours already reports, with more to say: the rule id and a piece of
#: axolotl's message
COVERED = {
    "eval-without-data": "not supported with val_set_size == 0",
    "test-datasets-with-val-set-size": "non-zero val_set_size should not be used with test_datasets",
    "qlora-without-4bit": "Require cfg.load_in_4bit to be True for qlora",
}



def drop_covered(found: list[Finding]) -> list[Finding]:
    fired = {f.rule for f in found}
    pieces = [piece for rule_id, piece in COVERED.items() if rule_id in fired]
    return [f for f in found if not (f.rule == "axolotl-validation" and any(p in f.message for p in pieces))]
