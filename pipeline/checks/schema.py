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



def _dataset_model(cfg: Mapping[str, Any]) -> type:
    from axolotl.utils.schemas.datasets import DPODataset, KTODataset, SFTDataset

    rl = cfg.get("rl")
    return DPODataset if rl in ("dpo", "ipo", "simpo") else KTODataset if rl == "kto" else SFTDataset



def _model_in(annotation: Any) -> type | None:
    """The one pydantic model an annotation holds (through Optional, Annotated, list), if exactly one."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = {m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None}
    return found.pop() if len(found) == 1 else None



def _known(model: type) -> list[str]:
    names = []
    for name, f in model.model_fields.items():  # type: ignore[attr-defined]
        names.append(name)
        if isinstance(f.alias, str):
            names.append(f.alias)
    return names



def unknown_keys(loaded: LoadedConfig, cfg: Mapping[str, Any], mixins: list[type]) -> list[Finding]:
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
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}?" if near else "remove it or check the spelling"
                where = "" if not path else " in " + ".".join(str(p) for p in path)
                found.append(Finding(str(loaded.path), loaded.line(*path, key), "unknown-key",
                                     f"axolotl does not know {key!r}{where} and silently ignores it; {hint}"))
                continue
            name = next((n for n, f in fields.items() if key in (n, f.alias)), key)
            if not path and name in ("datasets", "test_datasets"):
                inner: type | None = _dataset_model(cfg)
            else:
                inner = _model_in(fields[name].annotation)
            if inner is None:
                continue
            items = list(enumerate(sub)) if isinstance(sub, list) else [(None, sub)]
            for i, item in items:
                if isinstance(item, Mapping):
                    walk(inner, item, (*path, key) if i is None else (*path, key, i))

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
    return {"bf16": cc >= (8, 0), "fp8": cc >= (9, 0), "tf32": cc >= (8, 0), "n_gpu": 1,
            "compute_capability": f"sm_{cc[0]}{cc[1]}"}, env



def axolotl_validation(loaded: LoadedConfig, cfg: Mapping[str, Any], target: Target,
                       mixins: list[type]) -> tuple[dict[str, Any] | None, list[Finding]]:
    """Run axolotl's validation as `axolotl train` does (utils/config validate_config, with the target's
    capabilities); its errors become findings. Returns the validated config, or None if rejected."""
    from pydantic import ValidationError

    found: list[Finding] = []
    body = copy.deepcopy(dict(cfg))
    ds_model = _dataset_model(cfg)
    entries = body.get("datasets")
    if isinstance(entries, list):
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            try:
                with quiet():
                    entries[i] = ds_model(**entry)
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
            validated = model(**body).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        return None, _validation_findings(loaded, cfg, exc, ())
    except (ValueError, TypeError) as exc:
        return None, [Finding(str(loaded.path), None, "axolotl-validation",
                              f"axolotl rejects the config: {exc}; fix what it names")]
    return validated, found



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
            named = [w for w in re.findall(r"[a-z][a-z0-9_]+", msg) if w in cfg]
            line = loaded.line(named[0]) if named else None
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
