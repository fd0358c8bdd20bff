"""What a config trains on a model's shape: the LoRA target modules (axolotl's defaults where the config names
none), the modules saved whole (`lora_modules_to_save`) and the trainable parameter count. The memory
estimate (`pipeline.checks.estimate`) and the model rules build on it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.checks.shapes import Linear, Shape


def matches(name: str, key: str) -> bool:
    return name == key or name.endswith("." + key)


def lora_targets(s: Shape, cfg: Mapping[str, Any]) -> tuple[list[Linear], list[str]]:
    """(wrapped linear layers, entries of lora_target_modules that match no module)."""
    raw = cfg.get("lora_target_modules")
    if isinstance(raw, str):
        pattern = re.compile(raw)
        chosen = [lin for lin in s.linears if pattern.fullmatch(lin.name)]
        return chosen, ([] if chosen else [raw])
    entries = [str(x) for x in (raw or [])]
    if cfg.get("lora_target_linear"):
        entries += sorted({lin.name.rsplit(".", 1)[-1] for lin in s.linears
                           if lin.name != s.output_embedding})
    if not entries:  # peft's own default for the architecture
        entries = default_targets(s.model_type)
    names = {m.rsplit(".", 1)[-1] for m in s.module_params} | set(s.module_params)
    missing = [e for e in dict.fromkeys(str(x) for x in (raw or []))
               if not any(matches(n, e) for n in names)]
    chosen = [lin for lin in s.linears if any(matches(lin.name, e) for e in entries)]
    return _in_layers(chosen, cfg.get("peft_layers_to_transform")), missing


def _in_layers(chosen: list[Linear], layers: Any) -> list[Linear]:
    """peft's `layers_to_transform` (axolotl: peft_layers_to_transform): only modules inside those decoder
    layers are wrapped; a module outside every numbered layer is then not wrapped at all."""
    if layers is None or isinstance(layers, bool):
        return chosen
    try:
        keep = {int(layers)} if isinstance(layers, (int, str)) else {int(x) for x in layers}
    except (TypeError, ValueError):
        return chosen  # not a layer list: the schema reports it, the count stays the unfiltered one
    out = []
    for lin in chosen:
        m = re.search(r"(?:^|\.)layers\.(\d+)\.", lin.name)
        if m is not None and int(m.group(1)) in keep:
            out.append(lin)
    return out


def default_targets(model_type: str) -> list[str]:
    """peft's default LoRA targets for an architecture (what it wraps when the config names none)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

    return list(defaults.get(model_type, []))


def modules_to_save(s: Shape, cfg: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    """({entry: parameters its trained copies add}, entries that match no module)."""
    added, missing = {}, []
    for entry in [str(x) for x in (cfg.get("lora_modules_to_save") or [])]:
        hits = [n for n in s.module_params if matches(n, entry)]
        if hits:
            added[entry] = sum(s.module_params[n] for n in hits)
        else:
            missing.append(entry)
    return added, missing


@dataclass
class Trainable:
    lora: int
    saved: dict[str, int] = field(default_factory=dict)

    @property
    def saved_total(self) -> int:
        return sum(self.saved.values())

    @property
    def total(self) -> int:
        return self.lora + self.saved_total


def trainable(s: Shape, cfg: Mapping[str, Any]) -> Trainable:
    """LoRA's A and B of every target (r x in, out x r); with DoRA (`peft_use_dora`) also the magnitude
    vector peft adds per target, one weight per output feature."""
    r = int(cfg.get("lora_r") or 8)
    dora = bool(cfg.get("peft_use_dora"))
    targets, _ = lora_targets(s, cfg)
    return Trainable(lora=sum(r * (lin.in_features + lin.out_features) + (lin.out_features if dora else 0)
                              for lin in targets),
                     saved=modules_to_save(s, cfg)[0])
