"""A model's shape from its config.json alone: no weights, no GPU.

`shape(arch)` builds the model on torch's meta device from the architecture's config.json (shipped in
`pipeline/architectures/`, or `pipeline://tiny-llama`'s own) and reads off the real module tree
transformers would build: every linear layer (name, in, out), the input and output embeddings, total
parameters. `pipeline.checks.estimate` counts what a config trains, and its peak VRAM, from it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import safeio
from pipeline.core.cache import cache_dir

#: bump when Shape changes, so cached shapes are rebuilt
SHAPE_RECIPE = 3


@dataclass(frozen=True)
class Linear:
    name: str
    in_features: int
    out_features: int

    @property
    def numel(self) -> int:
        return self.in_features * self.out_features


@dataclass
class Shape:
    """What an estimate needs to know about a model, read off its meta-device module tree."""

    model_type: str
    total_params: int
    linears: list[Linear]
    #: parameters of every named module that has a weight (for lora_modules_to_save)
    module_params: dict[str, int]
    #: weight shape of every named module that has one
    weight_shapes: dict[str, tuple[int, ...]]
    #: module names of the input and output embeddings
    input_embedding: str
    output_embedding: str | None
    hidden: int
    layers: int
    vocab: int
    intermediate: int
    kv_dim: int
    max_positions: int | None
    #: width of the attention's queries (heads x head_dim; the hidden size in most models)
    q_dim: int = 0
    #: the output embedding is the input embedding's weight
    tied: bool = False

    @property
    def leaf_names(self) -> set[str]:
        return {name.rsplit(".", 1)[-1] for name in self.module_params}


def shape(arch: Mapping[str, Any], *, cache: bool = True) -> Shape:
    """Build the model on the meta device from its config.json (a dict) and read its shapes.

    Building needs transformers' modeling code, whose import takes seconds; the result depends only on
    the config and the transformers version, so it is kept in $PIPELINE_CACHE/shapes/ and read from
    there the next time (`cache=False` always builds)."""
    arch_json = json.dumps(dict(arch), sort_keys=True)
    if not cache:
        return _shape(arch_json)
    path = shape_path(arch)
    try:
        return _from_json(safeio.read_json(path, max_bytes=64 * safeio.MiB))
    except (safeio.BadFile, OSError, ValueError, KeyError, TypeError):
        pass
    s = _shape(arch_json)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(dataclasses.asdict(s)))
        os.replace(tmp, path)
    except OSError:  # a full or read-only cache: the shape is built again next time, nothing else is lost
        tmp.unlink(missing_ok=True)
    return s


def shape_path(arch: Mapping[str, Any]) -> Path:
    """Where the shape of an architecture is cached (keyed by its config.json and transformers' version)."""
    from importlib.metadata import version

    arch_json = json.dumps(dict(arch), sort_keys=True)
    key = hashlib.sha256(f"{arch_json}|transformers {version('transformers')}|{SHAPE_RECIPE}".encode())
    return cache_dir() / "shapes" / f"{key.hexdigest()[:24]}.json"


def _from_json(d: dict[str, Any]) -> Shape:
    d["linears"] = [Linear(**lin) for lin in d["linears"]]
    d["weight_shapes"] = {k: tuple(v) for k, v in d["weight_shapes"].items()}
    return Shape(**d)


@functools.lru_cache(maxsize=8)
def _shape(arch_json: str) -> Shape:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads(arch_json)
    cfg = AutoConfig.for_model(**{k: v for k, v in raw.items() if k != "architectures"})
    with torch.device("meta"):
        named = _multimodal_class(raw)
        model = named._from_config(cfg, dtype=torch.bfloat16) if named is not None else \
            AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    names = {id(m): n for n, m in model.named_modules()}
    linears = [Linear(n, m.in_features, m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear)]
    module_params = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_modules()
                     if n and getattr(m, "weight", None) is not None}
    weight_shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules()
                     if n and getattr(m, "weight", None) is not None}
    out = model.get_output_embeddings()
    text = cfg.get_text_config()  # the language model's settings (nested in multimodal configs such as Gemma 3)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    return Shape(
        model_type=cfg.model_type,
        total_params=sum(p.numel() for p in model.parameters()),
        linears=linears,
        module_params=module_params,
        weight_shapes=weight_shapes,
        input_embedding=names[id(model.get_input_embeddings())],
        output_embedding=names.get(id(out)) if out is not None else None,
        hidden=text.hidden_size,
        layers=text.num_hidden_layers,
        vocab=text.vocab_size,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        kv_dim=kv_heads * head_dim,
        max_positions=getattr(text, "max_position_embeddings", None),
        q_dim=text.num_attention_heads * head_dim,
        tied=out is not None and out.weight is model.get_input_embeddings().weight,
    )


def _multimodal_class(raw: Mapping[str, Any]) -> Any:
    """The vision-language class a config.json names (`Llama4ForConditionalGeneration`), where transformers has
    it: the model a run loads, vision tower included. transformers' causal-LM mapping gives some of these only
    their language model (Llama 4), so the module names and parameters of the vision tower would be missing."""
    import transformers

    names = raw.get("architectures") or []
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""
    if not name.endswith("ForConditionalGeneration"):
        return None
    return getattr(transformers, name, None)

