"""Parameter counts and a peak-VRAM estimate from a model's config.json alone: no weights, no GPU.

The model is built on torch's meta device from the architecture's config.json (shipped in
`pipeline/architectures/`, or `pipeline://tiny-llama`'s own), so every count below comes from the real
module tree transformers would build, not from a formula typed in by hand:

- `shape(arch)`: every linear layer (name, in, out), the input and output embeddings, total parameters;
- `lora_targets(shape, cfg)`: the linear layers a config's LoRA would wrap, matched the way axolotl and
  peft match them (`lora_target_linear`: every linear layer but the output embedding; a list: a module
  whose name is, or ends with `.` + , an entry; a string: a regex that must match the whole name);
- `trainable(shape, cfg)`: LoRA parameters (r x (in + out) per wrapped layer) and the full copies that
  `lora_modules_to_save` trains;
- `peak_vram(shape, cfg, adapter, tokens)`: the allocated-memory peak of a training step, from the model
  below. docs/check.md compares it with the two peaks measured on an H100.

The memory model, for one GPU (bytes; P_lora LoRA parameters, P_save `lora_modules_to_save` parameters,
T tokens per micro-batch, V vocabulary, h hidden size, L layers):

    weights      2 per base parameter (bf16); QLoRA: NF4 linear layers at 4 bits + double-quantised
                 absmax (one byte per 64 weights, fp32 per 256 blocks), embeddings and norms bf16
    adapter      P_lora x (4 weight + optimizer state) fp32 (peft upcasts adapters), + 4 for the
                 gradient when gradient accumulation keeps it between micro-batches;
                 P_save x (2 copy + optimizer state/2 (bf16 states) + 2 gradient likewise)
    checkpoints  L x T x h x 2 (each layer's input, with gradient checkpointing)
    layer        T x (20h + 6kv + 8i), + (18h + 3i) with LoRA dropout: one Llama-style layer's saved
                 activations (`layer_bytes_per_token`); all L of them without gradient checkpointing
    loss         12 x T x V: at the start of the backward pass the fp32 log-softmax output kept by
                 cross-entropy, its incoming gradient and the gradient it produces coexist; a fused
                 linear + cross-entropy (Liger, CCE) holds one chunk of logits instead (`loss_bytes`)

The peak is taken once the optimizer state exists, in a micro-batch's backward pass: with gradient
checkpointing the larger of the loss tensors (at its start) and one recomputed layer; without it, every
layer's activations and the loss tensors together. Only the unfused, checkpointed case is compared with
measurements (docs/check.md).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIB = 1024**3
#: bump when Shape changes, so cached shapes are rebuilt
SHAPE_RECIPE = 1

#: bytes of optimizer state per trainable fp32 parameter, by optimizer name (the rest: AdamW's two moments)
OPTIMIZER_STATE_BYTES = (("8bit", 2), ("lion", 4), ("sgd", 0), ("adafactor", 0))
ADAMW_STATE_BYTES = 8

#: NF4 with double quantisation (axolotl's QLoRA): 4 bits, a one-byte absmax per 64 weights, an fp32
#: second-level absmax per 256 blocks
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)

#: compute capability of cards people name with --gpu (bf16 needs 8.0 or newer: Ampere)
GPU_COMPUTE_CAPABILITY = {
    "p100": (6, 0),
    "v100": (7, 0),
    "t4": (7, 5),
    "rtx2080": (7, 5),
    "a100": (8, 0),
    "a10": (8, 6),
    "a10g": (8, 6),
    "a40": (8, 6),
    "rtx3090": (8, 6),
    "a6000": (8, 6),
    "l4": (8, 9),
    "l40s": (8, 9),
    "rtx4090": (8, 9),
    "h100": (9, 0),
    "h200": (9, 0),
    "rtx5090": (12, 0),
}


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
        return _from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    s = _shape(arch_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(s)))
    os.replace(tmp, path)
    return s


def shape_path(arch: Mapping[str, Any]) -> Path:
    """Where the shape of an architecture is cached (keyed by its config.json and transformers' version)."""
    from importlib.metadata import version

    from pipeline.core import models

    arch_json = json.dumps(dict(arch), sort_keys=True)
    key = hashlib.sha256(f"{arch_json}|transformers {version('transformers')}|{SHAPE_RECIPE}".encode())
    return models.cache_dir() / "shapes" / f"{key.hexdigest()[:24]}.json"


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
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    names = {id(m): n for n, m in model.named_modules()}
    linears = [Linear(n, m.in_features, m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear)]
    module_params = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_modules()
                     if n and getattr(m, "weight", None) is not None}
    weight_shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules()
                     if n and getattr(m, "weight", None) is not None}
    out = model.get_output_embeddings()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    return Shape(
        model_type=cfg.model_type,
        total_params=sum(p.numel() for p in model.parameters()),
        linears=linears,
        module_params=module_params,
        weight_shapes=weight_shapes,
        input_embedding=names[id(model.get_input_embeddings())],
        output_embedding=names.get(id(out)) if out is not None else None,
        hidden=cfg.hidden_size,
        layers=cfg.num_hidden_layers,
        vocab=cfg.vocab_size,
        intermediate=getattr(cfg, "intermediate_size", 4 * cfg.hidden_size),
        kv_dim=kv_heads * head_dim,
        max_positions=getattr(cfg, "max_position_embeddings", None),
    )


# --- what a config trains -----------------------------------------------------------------------------

def _matches(name: str, key: str) -> bool:
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
               if not any(_matches(n, e) for n in names)]
    chosen = [lin for lin in s.linears if any(_matches(lin.name, e) for e in entries)]
    return chosen, missing


def default_targets(model_type: str) -> list[str]:
    """peft's default LoRA targets for an architecture (what it wraps when the config names none)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

    return list(defaults.get(model_type, []))


def modules_to_save(s: Shape, cfg: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    """({entry: parameters its trained copies add}, entries that match no module)."""
    added, missing = {}, []
    for entry in [str(x) for x in (cfg.get("lora_modules_to_save") or [])]:
        hits = [n for n in s.module_params if _matches(n, entry)]
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
    r = int(cfg.get("lora_r") or 8)
    targets, _ = lora_targets(s, cfg)
    return Trainable(lora=sum(r * (lin.in_features + lin.out_features) for lin in targets),
                     saved=modules_to_save(s, cfg)[0])


# --- memory --------------------------------------------------------------------------------------------

def optimizer_state_bytes(optimizer: str | None) -> int:
    name = (optimizer or "adamw_torch").lower()
    for key, nbytes in OPTIMIZER_STATE_BYTES:
        if key in name:
            return nbytes
    return ADAMW_STATE_BYTES


@dataclass
class Estimate:
    adapter: str
    tokens: int
    parts: dict[str, float]  # GiB

    @property
    def peak_gib(self) -> float:
        return sum(self.parts.values())

    def as_dict(self) -> dict[str, Any]:
        return {"adapter": self.adapter, "tokens_per_micro_batch": self.tokens,
                "peak_gib": round(self.peak_gib, 2), "parts_gib": {k: round(v, 2) for k, v in self.parts.items()}}


def peak_vram(s: Shape, cfg: Mapping[str, Any], adapter: str, tokens: int) -> Estimate:
    """Allocated-memory peak of one training step on one GPU (see the module docstring)."""
    t = trainable(s, cfg)
    if adapter == "qlora":
        quantised = sum(lin.numel for lin in s.linears if lin.name != s.output_embedding)
        weights = quantised * NF4_BYTES_PER_PARAM + (s.total_params - quantised) * 2
    else:
        weights = s.total_params * 2.0
    state = optimizer_state_bytes(cfg.get("optimizer"))
    keeps_grads = int(cfg.get("gradient_accumulation_steps") or 1) > 1
    adapter_bytes = t.lora * (4.0 + state + (4 if keeps_grads else 0))
    adapter_bytes += t.saved_total * (2 + state / 2 + (2 if keeps_grads else 0))
    parts = {"weights": weights / GIB, "adapter+optimizer": adapter_bytes / GIB}
    layer = tokens * layer_bytes_per_token(s, cfg)
    loss = loss_bytes(s, cfg, tokens)
    if cfg.get("gradient_checkpointing"):
        parts["checkpoints"] = s.layers * tokens * s.hidden * 2 / GIB
        # the loss tensors die before the first layer is recomputed: the larger of the two is the peak
        parts["loss" if loss >= layer else "recomputed layer"] = max(loss, layer) / GIB
    else:
        parts["activations"] = s.layers * layer / GIB
        parts["loss"] = loss / GIB
    return Estimate(adapter, tokens, parts)


def layer_bytes_per_token(s: Shape, cfg: Mapping[str, Any]) -> int:
    """Activations one Llama-style decoder layer keeps for its backward pass, bytes per token (bf16):
    fp32 RMSNorm inputs and bf16 outputs (2 x 6h), q/k/v (2h + 4kv), rotary q/k (2h + 2kv), attention
    output and its contiguous copy (4h), SwiGLU gate/up/act/product (8i), and with lora_dropout > 0 a
    dropped copy and a mask of every wrapped layer's input (3 bytes each: 4 x 3h attention, 2 x 3h
    gate/up, 3i down)."""
    h, kv, i = s.hidden, s.kv_dim, s.intermediate
    per_token = 20 * h + 6 * kv + 8 * i
    if float(cfg.get("lora_dropout") or 0) > 0:
        per_token += 18 * h + 3 * i
    return per_token


def loss_bytes(s: Shape, cfg: Mapping[str, Any], tokens: int) -> float:
    """The loss tensors at the start of the backward pass. Unfused: the fp32 log-softmax output kept by
    cross-entropy, its incoming gradient and the gradient it returns (12 x tokens x vocab). Fused linear
    + cross-entropy (Liger, Cut Cross-Entropy) never holds the logits: one chunk of them (Liger's chunk:
    tokens / ceil(vocab / hidden), rounded up to a power of two) and the input gradient."""
    if cfg.get("liger_fused_linear_cross_entropy") or cfg.get("cut_cross_entropy"):
        chunk = 1 << max(0, math.ceil(tokens / math.ceil(s.vocab / s.hidden)) - 1).bit_length()
        return chunk * s.vocab * 4 + tokens * s.hidden * 2
    return 12.0 * tokens * s.vocab


def parse_memory(text: str) -> float:
    """'32GiB', '24GB', '80' (GiB) -> GiB."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(gib|gb|g|mib|mb)?\s*", text.lower())
    if not m:
        raise ValueError(f"{text!r} is not a memory size; write e.g. 32GiB or 24GB")
    value, unit = float(m.group(1)), m.group(2) or "gib"
    factor = {"gib": 1.0, "g": 1.0, "gb": 1e9 / GIB, "mib": 1 / 1024, "mb": 1e6 / GIB}[unit]
    return value * factor


def gpu_capability(name: str) -> tuple[int, int] | None:
    """Compute capability from a card name (`T4`, `RTX 4090`, `A100-80GB`) or `sm_86` / `8.6`."""
    raw = re.sub(r"[\s-]", "", name.lower())
    if m := re.fullmatch(r"sm_?(\d{1,2})(\d)", raw):
        return int(m.group(1)), int(m.group(2))
    if m := re.fullmatch(r"(\d{1,2})\.(\d)", raw):
        return int(m.group(1)), int(m.group(2))
    key = re.sub(r"(geforce|nvidia|tesla|[^a-z0-9])", "", raw)
    for card in sorted(GPU_COMPUTE_CAPABILITY, key=len, reverse=True):
        if key.startswith(card):
            return GPU_COMPUTE_CAPABILITY[card]
    return None
