"""Reduced-depth shapes: a shipped architecture with only its first N decoder layers, every width kept.

`pipeline://random/<architecture>?layers=N` builds one (pipeline.core.models). Every class, patched module
and kernel runs at the real model's widths (hidden size, heads, intermediate size, experts, vocabulary),
so whatever axolotl, peft or Liger do per architecture at start-up happens exactly as on the full model;
only the count of identical decoder layers differs. What it does not show: memory and time that grow with
depth (the estimate is made for the reduced shape), and a crash that only a layer past the N-th would
meet (every kind of layer is kept by `min_layers`).
"""

from __future__ import annotations

import json
import re
from typing import Any


def split_layers(name: str) -> tuple[str, int | None]:
    """`phi-3.5-mini?layers=2` -> ("phi-3.5-mini", 2); a name with no query -> (name, None).

    Raises:
        KeyError: a query other than `layers=<positive integer>`
    """
    if "?" not in name:
        return name, None
    base, query = name.split("?", 1)
    found = re.fullmatch(r"layers=([1-9][0-9]{0,3})", query)
    if not found:
        raise KeyError(f"{name!r}: the only option of a random/ shape is ?layers=N, N a positive whole number "
                       f"(e.g. {base}?layers=2)")
    return base, int(found[1])


def reduce_layers(raw: dict[str, Any], layers: int, name: str = "model") -> dict[str, Any]:
    """A config.json with only its first `layers` decoder layers and every width kept. Per-layer settings
    (`layer_types`, `mlp_only_layers`, `max_window_layers`) are cut to match, so each kept layer is what it is
    in the full model. A multimodal config (`text_config`) is cut in its language model; its vision tower
    stays whole.

    Raises:
        KeyError: `layers` above the model's own depth
    """
    out = json.loads(json.dumps(raw))
    text = out["text_config"] if isinstance(out.get("text_config"), dict) else out
    depth = int(text.get("num_hidden_layers") or 0)
    if layers > depth:
        raise KeyError(f"{name} has {depth} layers; ?layers= takes 1 to {depth}")
    text["num_hidden_layers"] = layers
    if isinstance(text.get("layer_types"), list):
        text["layer_types"] = text["layer_types"][:layers]
    if isinstance(text.get("mlp_only_layers"), list):
        text["mlp_only_layers"] = [i for i in text["mlp_only_layers"] if isinstance(i, int) and i < layers]
    if isinstance(text.get("max_window_layers"), int):
        text["max_window_layers"] = min(text["max_window_layers"], layers)
    return out


def min_layers(raw: dict[str, Any]) -> int:
    """The fewest leading layers that hold every kind of layer the model has (transformers' `layer_types`
    for the config: Gemma-3 has one global-attention layer in six, so 6), and at least 2, so that one
    layer's output feeds another; at most the model's depth."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(**{k: v for k, v in raw.items() if k != "architectures"})
    text = cfg.get_text_config()
    depth = int(getattr(text, "num_hidden_layers", 0) or 1)
    kinds = getattr(text, "layer_types", None)
    want = max(kinds.index(k) for k in set(kinds)) + 1 if isinstance(kinds, list) and kinds else 2
    return max(1, min(depth, max(2, want)))
