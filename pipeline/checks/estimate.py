"""Parameter counts and a peak-VRAM estimate from a model's shape alone: no weights, no GPU.

The shape (`pipeline.checks.shapes`) is read off the module tree transformers builds on the meta device
from the architecture's config.json, so every count below comes from the real model, not from a formula
typed in by hand:

- `lora_targets(shape, cfg)` (in `pipeline.checks.trained`, with `trainable`): the linear layers a config's LoRA would wrap, matched the way axolotl and
  peft match them (`lora_target_linear`: every linear layer but the output embedding; a list: a module
  whose name is, or ends with `.` + , an entry; a string: a regex that must match the whole name);
- `trainable(shape, cfg)`: LoRA parameters (r x (in + out) per wrapped layer) and the full copies that
  `lora_modules_to_save` trains;
- `peak_vram(shape, cfg, adapter, tokens)`: the allocated-memory peak of a training run (LoRA, QLoRA or a
  full fine-tune), from the model below; tests/unit/test_estimate_measured.py holds it to the measured
  peaks of docs/check.md (see benchmarks/README.md).

The memory model, for one GPU, counted tensor by tensor from what axolotl 0.19, peft, transformers and
torch allocate (bytes; T tokens per micro-batch, V vocabulary, h hidden size, i intermediate size, L
layers):

    weights      bf16, 2 per parameter; QLoRA: NF4 linear layers (4 bits + double-quantised absmax),
                 the rest bf16; a full fine-tune: embeddings and norms fp32 (axolotl upcasts them and,
                 with sdpa, never casts them back)
    trained      LoRA matrices fp32 (peft), `lora_modules_to_save` copies bf16, a full fine-tune every
                 weight in its dtype: the weights (an adapter's), their gradients in the same dtype and
                 the optimizer's moments (AdamW: two in the weight's dtype; bitsandbytes 8-bit: two bytes,
                 embeddings fp32), + 64 MiB of CUDA libraries' workspaces
    checkpoints  L x T x h x (2, 4 in a full fine-tune's fp32 stream): each layer's input, and the final
                 norm's, with gradient checkpointing
    layer        one decoder layer's saved activations (`layer_bytes_per_token`); all L of them without
                 gradient checkpointing, with a bf16 copy of every LoRA matrix (the kernels keep one)
    working      a layer's backward: the stream's gradient in and out, the MLP's gradients; QLoRA
                 dequantises one projection at a time
    loss         unfused: 12 x T x V (fp32 log-softmax output, its gradient and the one it returns);
                 Liger's fused linear + cross-entropy: the input's gradient, one chunk of logits, and a
                 trained output embedding's gradient and copies (`loss_bytes`)

The peak is the largest of three moments once the optimizer state exists: a micro-batch's backward
(with checkpointing: checkpoints + the larger of the loss tensors and one recomputed layer with its
working set; without: every layer's activations + the larger of the loss tensors and the working set),
and the optimizer step (torch's foreach AdamW takes the square root of every second moment into a new
tensor list). Axolotl resets CUDA's peak counter after loading, so the moment it upcasts the
embeddings for LoRA/QLoRA is reported beside the peak (`loading_gib`), derived and not measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.checks.shapes import Shape
from pipeline.checks.trained import Trainable, lora_targets, matches, trainable

GIB = 1024**3

#: NF4 with double quantisation (axolotl's QLoRA): 4 bits, a one-byte absmax per 64 weights, an fp32
#: second-level absmax per 256 blocks
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)


# --- memory --------------------------------------------------------------------------------------------

#: optimizer state per trainable parameter, by optimizer name: bytes per byte of the parameter (AdamW: two
#: moments in the parameter's dtype), or with "8bit" bitsandbytes' two one-byte moments whatever the dtype,
#: except for embeddings, which transformers' Trainer has it keep in fp32 (`optim_bits: 32`)
OPTIMIZER_STATE = (("lion", 1.0), ("sgd", 0.0), ("adafactor", 0.0))
ADAMW_STATE = 2.0
EIGHT_BIT_STATE_BYTES = 2.0


def optimizer_state(optimizer: str | None, dtype_bytes: int, embedding: bool = False) -> float:
    """Bytes of optimizer state for one trainable parameter stored in `dtype_bytes` bytes."""
    name = (optimizer or "adamw_torch").lower()
    if "8bit" in name:
        return 8.0 if embedding else EIGHT_BIT_STATE_BYTES
    for key, ratio in OPTIMIZER_STATE:
        if key in name:
            return ratio * dtype_bytes
    return ADAMW_STATE * dtype_bytes


def optimizer_temp_ratio(optimizer: str | None) -> float:
    """The largest temporary of an optimizer step, per byte of trainable parameter: torch's foreach AdamW
    takes the square root of every second moment into a new list before the update (`_multi_tensor_adam`);
    the fused and 8-bit ones work in place."""
    name = (optimizer or "adamw_torch").lower()
    return 0.0 if ("fused" in name or "8bit" in name or optimizer_state(optimizer, 4) == 0) else 1.0


#: CUDA libraries' workspaces allocated through torch's allocator at the first matrix product (cuBLAS and
#: cuBLASLt), in bytes: what measured runs hold above weights and optimizer state (benchmarks/README.md)
WORKSPACES = 64 * 2**20


@dataclass
class Estimate:
    adapter: str
    tokens: int
    parts: dict[str, float]  # GiB, summing to the peak
    #: which moment of a step the peak is at
    at: str = "backward"
    #: the moment of loading when axolotl upcasts the embeddings (GiB; derived, not measured: axolotl resets
    #: CUDA's peak counter after loading)
    loading_gib: float = 0.0

    @property
    def peak_gib(self) -> float:
        return sum(self.parts.values())

    @property
    def needs_gib(self) -> float:
        """What a card must hold: the training peak, or the loading moment where that is larger."""
        return max(self.peak_gib, self.loading_gib)

    def as_dict(self) -> dict[str, Any]:
        return {"adapter": self.adapter, "tokens_per_micro_batch": self.tokens, "at": self.at,
                "peak_gib": round(self.peak_gib, 2), "parts_gib": {k: round(v, 2) for k, v in self.parts.items()},
                "loading_gib": round(self.loading_gib, 2)}


@dataclass(frozen=True)
class _Setup:
    """How a config trains, as far as memory goes (see `peak_vram`)."""

    adapter: str  # lora | qlora | full
    wrapped: frozenset[str]  # leaf names of the linear layers LoRA wraps in a decoder layer
    kernels: frozenset[str]  # axolotl's LoRA kernels in use: qkv, o, mlp
    dropout: bool
    resid: int  # bytes of the residual stream: fp32 in a full fine-tune (axolotl keeps embeddings fp32)
    repeat_kv: bool  # packing or padding: transformers repeats k and v to every head before SDPA
    fused_loss: bool
    checkpointing: bool
    #: transformers checkpoints the decoder layers whose index is a multiple of this (`every_n_layers` in
    #: gradient_checkpointing_kwargs); the others keep their activations
    every_n_layers: int = 1


def _setup(s: Shape, cfg: Mapping[str, Any], adapter: str) -> _Setup:
    full = adapter not in ("lora", "qlora")
    layer0 = [lin for lin in s.linears if ".layers.0." in lin.name]
    wrapped = frozenset() if full else frozenset(
        lin.name.rsplit(".", 1)[-1] for lin in lora_targets(s, cfg)[0] if ".layers.0." in lin.name)
    kernels: set[str] = set()
    if not full:  # axolotl switches its kernels on for LoRA/QLoRA unless a config sets one of them
        explicit = any(cfg.get(k) is not None
                       for k in ("lora_qkv_kernel", "lora_o_kernel", "lora_mlp_kernel", "lora_embedding_kernel"))
        leaves = {lin.name.rsplit(".", 1)[-1] for lin in layer0}
        groups = {"qkv": {"q_proj", "k_proj", "v_proj"}, "o": {"o_proj"}, "mlp": {"gate_proj", "up_proj", "down_proj"}}
        for name, group in groups.items():
            on = bool(cfg.get(f"lora_{name}_kernel")) if explicit else True
            if on and group <= leaves and group <= wrapped:  # a kernel needs every projection of its group wrapped
                kernels.add(name)
    return _Setup(
        adapter="full" if full else adapter, wrapped=wrapped, kernels=frozenset(kernels),
        dropout=not full and float(cfg.get("lora_dropout") or 0) > 0, resid=4 if full else 2,
        repeat_kv=bool(cfg.get("sample_packing") or cfg.get("pad_to_sequence_len")
                       or int(cfg.get("micro_batch_size") or 1) > 1),
        fused_loss=bool(cfg.get("liger_fused_linear_cross_entropy") or cfg.get("cut_cross_entropy")),
        checkpointing=bool(cfg.get("gradient_checkpointing")), every_n_layers=checkpoint_every(cfg))


def checkpoint_every(cfg: Mapping[str, Any]) -> int:
    """`gradient_checkpointing_kwargs.every_n_layers` (1 where unset or not a whole number >= 1)."""
    kwargs = cfg.get("gradient_checkpointing_kwargs")
    n = kwargs.get("every_n_layers", 1) if isinstance(kwargs, Mapping) else 1
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


def layer_bytes_per_token(s: Shape, cfg: Mapping[str, Any], adapter: str = "lora") -> int:
    """Activations one decoder layer keeps for its backward pass, bytes per token.

    Counted tensor by tensor from what each operation saves (bf16 compute, 2 bytes):
    - each RMSNorm (Liger's) keeps its input: the residual stream (2 bytes, fp32 in a full fine-tune);
    - axolotl's LoRA kernels keep their input (the norm's output, or the attention output), with dropout
      a dropped copy and its mask (3 bytes), and the MLP kernel gate and up (it recomputes the activation);
    - without a kernel: a trained linear layer keeps its input (autocast's own bf16 copy for each layer
      when the stream is fp32); a LoRA-wrapped frozen one keeps the bf16 input of lora_A (+ mask); a
      frozen unwrapped one nothing; the SwiGLU keeps gate, its activation and up;
    - SDPA keeps q, k, v and its output, which is o_proj's input itself (laid out batch, sequence, heads,
      its transpose back is already contiguous); with packing or padding transformers repeats k and v to
      every head first, so they are kept at the query's size.
    """
    st = _setup(s, cfg, adapter)
    h, q, kv, i = s.hidden, s.q_dim, s.kv_dim, s.intermediate
    act, resid, full = 2, st.resid, st.adapter == "full"
    rank = int(cfg.get("lora_r") or 8)
    drop = 3 if st.dropout else 0  # a dropped bf16 copy and a one-byte mask

    def linear(leaf: str, width: int) -> int:
        """What a linear layer outside the kernels keeps of an input of `width` features beyond the input."""
        if full:
            return act * width
        if leaf in st.wrapped:  # lora_A's bf16 input (+ the dropout mask) and lora_B's rank-wide input
            return act * width + (width if st.dropout else 0) + act * rank
        return 0

    per = 2 * resid * h  # the two norms' inputs
    if "qkv" in st.kernels:
        per += act * h + drop * h
    elif full and resid == act:  # one shared bf16 input
        per += act * h
    else:
        per += sum(linear(leaf, h) for leaf in ("q_proj", "k_proj", "v_proj"))
    per += act * (q + 2 * (q if st.repeat_kv else kv) + q)  # SDPA: q, k, v, output (= o_proj's input)
    if "o" in st.kernels:
        per += drop * q
    elif not full:  # a full fine-tune's o_proj keeps SDPA's output, counted above
        per += linear("o_proj", q)
    if "mlp" in st.kernels:
        per += act * h + drop * h + 2 * act * i
    else:
        if full and resid == act:
            per += act * h
        else:
            per += sum(linear(leaf, h) for leaf in ("gate_proj", "up_proj"))
        per += 3 * act * i + linear("down_proj", i)
    return per


def loss_bytes(s: Shape, cfg: Mapping[str, Any], tokens: int, adapter: str = "lora") -> float:
    """The loss tensors at their largest. Unfused: the fp32 log-softmax output kept by cross-entropy, its
    incoming gradient and the gradient it returns coexist at the start of the backward pass (12 x tokens x
    vocab; a full fine-tune adds autocast's bf16 copy of the fp32 output embedding). Fused linear +
    cross-entropy (Liger) never holds the logits: during the forward it holds the input's gradient
    (computed there, kept for the backward), one chunk of bf16 logits (Liger's chunk: tokens /
    ceil(vocab / hidden), rounded up to a power of two) and, when the output embedding trains, its new
    gradient: in a full fine-tune fp32 (4 bytes a weight) beside autocast's bf16 copy of the weight and
    one of its transpose (not a leaf, so not cached: 2 + 2); for a bf16 `lora_modules_to_save` copy
    bf16 (2) beside each chunk's bf16 product and its fp32 copy (2 + 4)."""
    st = _setup(s, cfg, adapter)
    head = s.vocab * s.hidden
    head_trains = st.adapter == "full" or any(
        matches(s.output_embedding or "", str(m)) for m in (cfg.get("lora_modules_to_save") or []))
    if not st.fused_loss:
        return 12.0 * tokens * s.vocab + (2.0 * head if st.adapter == "full" else 0.0)
    chunk = 1 << max(0, math.ceil(tokens / math.ceil(s.vocab / s.hidden)) - 1).bit_length()
    out = tokens * s.hidden * st.resid + min(chunk, tokens) * (s.vocab * 2 + s.hidden * st.resid)
    if head_trains:
        out += head * (4 + 2 + 2) if st.adapter == "full" else head * (2 + 2 + 4)
    return out


def peak_vram(s: Shape, cfg: Mapping[str, Any], adapter: str, tokens: int) -> Estimate:
    """Allocated-memory peak of a training run on one GPU, by part (GiB; see the module docstring).

    `adapter`: lora, qlora, or full (a full fine-tune: no adapter, every weight trains)."""
    st = _setup(s, cfg, adapter)
    t = trainable(s, cfg) if st.adapter != "full" else Trainable(0)
    optimizer = cfg.get("optimizer")
    embeddings = [n for n in dict.fromkeys([s.input_embedding, s.output_embedding]) if n]
    emb_params = s.module_params[s.input_embedding] + (
        0 if s.tied or not s.output_embedding else s.module_params[s.output_embedding])
    norm_params = sum(p for n, p in s.module_params.items() if "norm" in n.rsplit(".", 1)[-1])

    if st.adapter == "qlora":
        quantised = sum(lin.numel for lin in s.linears if lin.name != s.output_embedding)
        weights = quantised * NF4_BYTES_PER_PARAM + (s.total_params - quantised) * 2
    elif st.adapter == "full":  # axolotl upcasts embeddings and norms to fp32 and keeps them there (sdpa)
        weights = (s.total_params - emb_params - norm_params) * 2.0 + (emb_params + norm_params) * 4.0
    else:
        weights = s.total_params * 2.0
    # what trains: a full fine-tune's weights themselves; else peft's fp32 LoRA matrices and the bf16
    # copies of lora_modules_to_save. Its gradients, in the same dtypes, and the optimizer's moments
    # (parameters, bytes each, an nn.Embedding's weight)
    groups: list[tuple[int, int, bool]]
    if st.adapter == "full":
        inp = s.module_params[s.input_embedding]
        groups = [(s.total_params - emb_params - norm_params, 2, False), (inp, 4, True),
                  (emb_params - inp + norm_params, 4, False)]
    else:
        groups = [(t.lora, 4, False)] + [(n, 2, matches(s.input_embedding, entry)) for entry, n in t.saved.items()]
    trained = sum(n * b for n, b, _ in groups)
    moments = sum(n * optimizer_state(optimizer, b, emb) for n, b, emb in groups)
    state = (0.0 if st.adapter == "full" else trained) + trained + moments + WORKSPACES
    parts: dict[str, float] = {"weights": weights / GIB, "trainable+optimizer": state / GIB}

    layer = tokens * layer_bytes_per_token(s, cfg, st.adapter)
    loss = loss_bytes(s, cfg, tokens, st.adapter)
    top = tokens * s.hidden * st.resid  # the final norm's input
    # the backward of one layer: the stream's gradient into and out of it, and the MLP's: axolotl's kernel
    # computes the SwiGLU's gradients in place of gate and up (one bf16 intermediate-wide gradient);
    # autograd allocates down's input gradient, the product's two factors' and the gate's (four)
    working = float(tokens * (2 * s.hidden * st.resid + (2 if "mlp" in st.kernels else 8) * s.intermediate))
    if st.adapter == "qlora":  # the kernels dequantise one projection's NF4 weight to bf16 at a time
        working += 2.0 * max((lin.numel for lin in s.linears if ".layers.0." in lin.name), default=0)
    # axolotl's kernels (and autocast, without them) keep a bf16 copy of each layer's LoRA matrices
    copies = 2.0 * t.lora
    if st.checkpointing:
        # transformers checkpoints layers 0, n, 2n, ...: the others keep every activation and their matrices' copies
        checkpointed = math.ceil(s.layers / st.every_n_layers)
        kept = s.layers - checkpointed
        parts["checkpoints"] = (checkpointed * tokens * s.hidden * st.resid + top) / GIB
        if kept:
            parts["activations"] = (kept * layer + copies * kept / s.layers) / GIB
        recompute = layer + working + copies / s.layers
        parts["loss" if loss >= recompute else "recomputed layer"] = max(loss, recompute) / GIB
    else:
        parts["activations"] = (s.layers * layer + top + copies) / GIB
        parts["loss" if loss >= working else "backward"] = max(loss, working) / GIB
    at = "backward"
    step = trained * optimizer_temp_ratio(optimizer)
    if step / GIB > sum(v for k, v in parts.items() if k not in ("weights", "trainable+optimizer")):
        parts = {"weights": parts["weights"], "trainable+optimizer": parts["trainable+optimizer"],
                 "optimizer step": step / GIB}
        at = "optimizer step"
    # loading: for LoRA/QLoRA axolotl upcasts the embeddings to fp32, then casts them back; the last one's
    # bf16 original and fp32 copy coexist for a moment
    loading = 0.0
    if st.adapter != "full":
        last = max((s.module_params[n] for n in embeddings), default=0)
        loading = (weights + 2.0 * emb_params + 2.0 * last) / GIB
    return Estimate(st.adapter, tokens, parts, at=at, loading_gib=loading)

