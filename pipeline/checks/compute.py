"""The fastest way to compute the same training on a card: `pipeline: {compute: fastest}`.

A config says *what* trains (model, adapter, data and its order, global batch, optimizer, schedule, the
trained weights' precision) and also *how* it is computed. The shipped configs compute for a 32 GB card;
on a larger one that recomputes every layer's forward for memory it does not need. With

    pipeline:
      compute: fastest          # default: as_written
      compute_gpu_mem: 32GiB    # optional: choose for this card rather than the GPU here

the run's config is resolved with the fastest computation that the peak-VRAM estimate
(`pipeline.checks.estimate`, held to measured peaks by tests/unit/test_estimate_measured.py) says fits
the card, raised by its tolerance and less the card's margin (`pipeline.checks.memory.fits`), and stays under
the config's own `pipeline.bounds.peak_vram_gib` (a smoke judges the peak against it: raise it to let the
choice use the card). Where nothing faster fits, the choice says so. Only axolotl,
transformers, peft and torch settings that leave the training itself unchanged are ever touched
(COMPUTATION_KEYS), one lever at a time, each with the reason it was or was not taken:

- fused kernels: Liger's RMSNorm, RoPE and fused linear + cross-entropy where the config has none (the same
  functions; the fused loss sums in another order);
- attention: the flash-attn package where it is installed, else torch's own SDPA (never eager);
- gradient checkpointing: off where every layer's activations fit; else every n-th layer only
  (transformers' `every_n_layers`), the most layers kept that fit; else as written;
- micro batch x accumulation: the largest micro batch that divides the global batch and fits, accumulation
  lowered to keep the global batch, where the loss is weighted per token (pipeline.in_axolotl.loss, so the
  split does not change what is trained) and every packed sequence an epoch still trains (Reach: axolotl's
  packing sampler drops an epoch's incomplete last micro batch, so with packing the split changes only where
  the packed sequences an epoch are known exactly and fill whole micro batches, or the run ends before the
  epoch's last one);
- torch.compile: left as written (COMPILE_WHY; benchmarks/README.md).

The choice and the estimates that justify it go into the run's resolved config (a comment) and its
manifest (`compute`); `pipeline check` shows it for the card it checks for.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.checks import estimate, shapes
from pipeline.checks.memory import BOUND_TOLERANCE, ESTIMATE_TOLERANCE, fits, margin_gib

#: the only axolotl settings the choice may change: how the training is computed, never what it trains
COMPUTATION_KEYS = frozenset({
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "sdp_attention", "flash_attention", "plugins",
    "liger_rope", "liger_rms_norm", "liger_fused_linear_cross_entropy", "micro_batch_size",
    "gradient_accumulation_steps", "multipack_real_batches",
})
LIGER_PLUGIN = "axolotl.integrations.liger.LigerPlugin"
#: model types Liger's RMSNorm, RoPE and fused loss patch (liger_kernel 0.8's MODEL_TYPE_TO_APPLY_LIGER_FN)
LIGER_MODELS = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "granite",
                          "olmo2"})
#: attention settings of axolotl other than sdp_attention and flash_attention: a config naming one keeps it
OTHER_ATTENTION = ("xformers_attention", "flex_attention", "s2_attention", "sage_attention", "eager_attention")
COMPILE_WHY = ("torch_compile left as written: on the H200 the compiled 8B LoRA step without recomputation ran "
               "within 1.2% of the uncompiled one (benchmarks/README.md): peft's layers and axolotl's Triton kernels "
               "stay outside the compiled regions, and the first step took 32 s to compile")


@dataclass(frozen=True)
class Room:
    """Where a computation must fit: the card (less its margin) and the config's own peak_vram_gib bound."""

    card_gib: float
    bound_gib: float | None = None

    def fits(self, e: estimate.Estimate) -> bool:
        """The estimate, raised by its tolerance, fits the card less its margin, and raised by BOUND_TOLERANCE
        stays under the bound."""
        return fits(e, self.card_gib) and (self.bound_gib is None
                                            or e.needs_gib * (1 + BOUND_TOLERANCE) <= self.bound_gib)

    def describe(self) -> str:
        usable = self.card_gib - margin_gib(self.card_gib)
        text = f"{usable:.1f} usable GiB"
        if self.bound_gib is not None and self.bound_gib < usable:
            text = f"the config's bound pipeline.bounds.peak_vram_gib {self.bound_gib:g} GiB (the card: {text})"
        return text


@dataclass(frozen=True)
class Reach:
    """What a run will train, as the check knows it: the loss weighting, the sequences an epoch (rows, or packed
    sequences with sample_packing) and whether that count is exact, and the optimizer steps planned."""

    weighting: str = "per-token"
    sequences: int | None = None
    exact: bool = False
    planned_steps: int | None = None

    @classmethod
    def of(cls, weighting: str, schedule: Mapping[str, Any]) -> Reach:
        """From the check's schedule facts (`Schedule.as_dict()`): sequences an epoch, whether exact, and the
        planned steps where they are exact."""
        sequences = schedule.get("sequences")
        steps = schedule.get("total_steps") if schedule.get("total_exact") else None
        return cls(weighting=weighting, sequences=sequences if isinstance(sequences, int) else None,
                   exact=schedule.get("exact") is True, planned_steps=steps if isinstance(steps, int) else None)

    def keeps_every_sequence(self, packing: bool, micro: int, global_batch: int) -> str | None:
        """None where micro batch `micro` trains every sequence micro batch 1 does; else why not."""
        if not packing:
            return None  # the unpacked loader keeps an epoch's last short batch
        if self.sequences is None or not self.exact:
            return "the packed sequences an epoch are not known exactly here"
        tail = self.sequences % micro
        if tail == 0 or (self.planned_steps is not None and self.planned_steps * global_batch <= self.sequences - tail):
            return None
        return (f"{self.sequences} packed sequences an epoch leave {tail} in an incomplete micro batch of {micro}, "
                "which axolotl's packing sampler drops")


@dataclass
class Lever:
    """One way of computing faster: whether it was taken, the settings it sets, and why."""

    name: str
    chosen: bool
    why: str
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "chosen": self.chosen, "why": self.why, "settings": self.settings}


@dataclass
class Choice:
    """The computation chosen for one card, with the estimates that justify it."""

    card: str | None
    card_gib: float | None
    levers: list[Lever] = field(default_factory=list)
    written: estimate.Estimate | None = None
    chosen: estimate.Estimate | None = None
    note: str = ""
    bound_gib: float | None = None

    @property
    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for lever in self.levers:
            if lever.chosen:
                out.update(lever.settings)
        return out

    @property
    def usable_gib(self) -> float | None:
        return None if self.card_gib is None else self.card_gib - margin_gib(self.card_gib)

    def summary(self) -> str:
        """One line: the card, what was taken, the estimate before and after."""
        if self.card_gib is None or self.written is None or self.chosen is None:
            return self.note
        card = f"{self.card} ({self.card_gib:.1f} GiB)" if self.card else f"a {self.card_gib:g} GiB card"
        taken = [lever for lever in self.levers if lever.chosen]
        if not taken:
            return f"for {card}: {self.note}"
        what = "; ".join(lever.why for lever in taken)
        room = Room(self.card_gib, self.bound_gib).describe()
        return (f"for {card}: {what} (estimated peak {self.written.needs_gib:.1f} -> {self.chosen.needs_gib:.1f} "
                f"GiB +{ESTIMATE_TOLERANCE:.0%} within {room})" + (f"; {self.note}" if self.note else ""))

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": "fastest", "card": self.card,
            "card_gib": None if self.card_gib is None else round(self.card_gib, 2),
            "usable_gib": None if self.usable_gib is None else round(self.usable_gib, 2),
            "bound_gib": self.bound_gib,
            "estimate_tolerance": ESTIMATE_TOLERANCE,
            "settings": self.settings, "levers": [lever.as_dict() for lever in self.levers],
            "estimate_as_written": self.written.as_dict() if self.written else None,
            "estimate_chosen": self.chosen.as_dict() if self.chosen else None,
            "summary": self.summary(), "note": self.note,
        }


def tokens_per_micro_batch(cfg: Mapping[str, Any], max_len: int | None = None) -> int:
    """Tokens of one micro batch: micro_batch_size x sequence_len with packing or padding, else the longest
    row (`max_len`, where known) bounds it."""
    mbs = max(_int(cfg.get("micro_batch_size"), 1), 1)
    seq = _int(cfg.get("sequence_len"), 2048)
    if cfg.get("sample_packing") or cfg.get("pad_to_sequence_len") or not max_len:
        return mbs * seq
    return mbs * min(seq, max_len)


def choose(shape: shapes.Shape | None, cfg: Mapping[str, Any], adapter: str, card_gib: float | None, *,
           card: str | None = None, bound_gib: float | None = None, max_len: int | None = None,
           flash_installed: bool | None = None, reach: Reach | None = None) -> Choice:
    """The fastest computation of `cfg`'s training whose estimate fits a card of `card_gib` GiB.

    adapter: lora, qlora or full; bound_gib: the config's pipeline.bounds.peak_vram_gib, which the chosen
    peak must keep (the smoke judges it); max_len: the longest row in tokens, where known (unpacked data);
    flash_installed: whether the flash-attn package imports (default: looked up here); reach: what the run
    trains, which decides whether the split of the global batch may change (unknown: it stays as written)."""
    if card_gib is None:
        return Choice(card, None, note="no card to choose for (no GPU here and none named with "
                                       "pipeline.compute_gpu_mem or --gpu-mem): computed as written")
    if shape is None:
        return Choice(card, card_gib, note="the model's shape is unknown, so is its memory: computed as written")
    current = dict(cfg)
    written = estimate.peak_vram(shape, current, adapter, tokens_per_micro_batch(current, max_len))
    levers: list[Lever] = []
    for lever_fn in (_fused, _attention):
        lever = lever_fn(shape, current, flash_installed)
        levers.append(lever)
        if lever.chosen:
            current.update(lever.settings)
    room = Room(card_gib, bound_gib)
    lever = _checkpointing(shape, current, adapter, room, max_len)
    levers.append(lever)
    if lever.chosen:
        current.update(lever.settings)
    lever = _micro_batch(shape, current, adapter, room, max_len, reach or Reach(sequences=None))
    levers.append(lever)
    if lever.chosen:
        current.update(lever.settings)
    levers.append(Lever("compile", False, COMPILE_WHY))
    chosen = estimate.peak_vram(shape, current, adapter, tokens_per_micro_batch(current, max_len))
    choice = Choice(card, card_gib, levers, written, chosen, bound_gib=bound_gib)
    if not any(lever.chosen for lever in levers):
        gc = next(lever for lever in levers if lever.name == "gradient_checkpointing")
        choice.note = (f"nothing faster fits: {gc.why}" if cfg.get("gradient_checkpointing") else
                       "computed as written: nothing faster was found")
    if chosen.needs_gib != written.needs_gib and not room.fits(chosen):
        choice.note = (f"the computation chosen (~{chosen.needs_gib:.1f} GiB) does not fit {room.describe()}"
                       + (f"; {choice.note}" if choice.note else ""))
    return choice


def _fused(shape: shapes.Shape, cfg: Mapping[str, Any], _flash: bool | None) -> Lever:
    plugins = [str(p) for p in (cfg.get("plugins") or [])]
    if LIGER_PLUGIN in plugins or any(str(k).startswith("liger_") for k in cfg):
        return Lever("fused_kernels", False, "Liger's kernels: as the config sets them")
    if shape.model_type not in LIGER_MODELS:
        return Lever("fused_kernels", False, f"no Liger kernels for model type {shape.model_type!r}")
    settings: dict[str, Any] = {"plugins": [*plugins, LIGER_PLUGIN], "liger_rope": True, "liger_rms_norm": True}
    if not cfg.get("cut_cross_entropy"):  # a config that fuses its loss already keeps its own
        settings["liger_fused_linear_cross_entropy"] = True
    return Lever("fused_kernels", True, "Liger's RMSNorm, RoPE and fused linear + cross-entropy on", settings)


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def _attention(_shape: shapes.Shape, cfg: Mapping[str, Any], flash: bool | None) -> Lever:
    flash = flash_attn_installed() if flash is None else flash
    if cfg.get("flash_attention"):
        return Lever("attention", False, "flash_attention: as the config sets it")
    if named := [k for k in OTHER_ATTENTION if cfg.get(k)]:
        return Lever("attention", False, f"{named[0]}: as the config sets it")
    if flash:
        return Lever("attention", True, "flash-attn's kernels (installed here) in place of SDPA",
                     {"flash_attention": True, "sdp_attention": False})
    if cfg.get("sdp_attention"):
        return Lever("attention", False, "sdp_attention kept: torch's own flash kernel (varlen with packing); the "
                                         "flash-attn package is not installed here")
    return Lever("attention", True, "torch's SDPA in place of eager attention", {"sdp_attention": True})


def _fits(shape: shapes.Shape, cfg: Mapping[str, Any], adapter: str, room: Room,
          max_len: int | None) -> tuple[bool, estimate.Estimate]:
    e = estimate.peak_vram(shape, cfg, adapter, tokens_per_micro_batch(cfg, max_len))
    return room.fits(e), e


def _checkpointing(shape: shapes.Shape, cfg: Mapping[str, Any], adapter: str, room: Room,
                   max_len: int | None) -> Lever:
    gc = cfg.get("gradient_checkpointing")
    if not gc:
        return Lever("gradient_checkpointing", False, "gradient checkpointing already off: nothing is recomputed")
    if gc is not True or cfg.get("activation_offloading"):
        return Lever("gradient_checkpointing", False, "the config offloads activations: its checkpointing is kept")
    ok, off = _fits(shape, {**cfg, "gradient_checkpointing": False}, adapter, room, max_len)
    if ok:
        return Lever("gradient_checkpointing", True,
                     f"gradient checkpointing off (~{off.needs_gib:.1f} GiB: no layer is recomputed)",
                     {"gradient_checkpointing": False})
    kwargs = dict(cfg.get("gradient_checkpointing_kwargs") or {})
    now = estimate.checkpoint_every(cfg)
    tried: list[str] = []
    for n in _every_n_ladder(shape.layers, now):
        settings = {"gradient_checkpointing_kwargs": {"use_reentrant": False, **kwargs, "every_n_layers": n}}
        ok, e = _fits(shape, {**cfg, **settings}, adapter, room, max_len)
        recomputed = math.ceil(shape.layers / n)
        if ok:
            return Lever("gradient_checkpointing", True,
                         f"{recomputed} of {shape.layers} layers recomputed (every_n_layers {n}: ~{e.needs_gib:.1f} "
                         f"GiB; off: ~{off.needs_gib:.1f} GiB)", settings)
        tried.append(f"one layer in {n} ~{e.needs_gib:.1f} GiB")
    return Lever("gradient_checkpointing", False,
                 f"every layer's forward is recomputed as written: without it ~{off.needs_gib:.1f} GiB"
                 + (f", recomputing {tried[-1]}" if tried else "")
                 + f", +{ESTIMATE_TOLERANCE:.0%}, against {room.describe()}")


def _every_n_ladder(layers: int, now: int) -> list[int]:
    """every_n_layers values that recompute fewer layers than `now` does, fewest recomputed first."""
    seen: dict[int, int] = {}
    for n in range(layers, 1, -1):
        recomputed = math.ceil(layers / n)
        if recomputed < math.ceil(layers / now) and recomputed not in seen:
            seen[recomputed] = n
    return [seen[k] for k in sorted(seen)]


def _micro_batch(shape: shapes.Shape, cfg: Mapping[str, Any], adapter: str, room: Room, max_len: int | None,
                 reach: Reach) -> Lever:
    """The largest micro batch that divides the global batch, keeps every sequence and fits, accumulation lowered
    to keep the global batch: fewer, larger launches of the same training."""
    mbs = max(_int(cfg.get("micro_batch_size"), 1), 1)
    ga = max(_int(cfg.get("gradient_accumulation_steps"), 1), 1)
    keep = f"micro batch {mbs} x accumulation {ga} kept"
    if ga == 1:
        return Lever("micro_batch", False, f"micro batch {mbs} x accumulation 1: one micro batch a step already")
    if reach.weighting != "per-token":
        return Lever("micro_batch", False, f"{keep}: with pipeline.loss_weighting: {reach.weighting} the loss is a "
                                           "mean per micro batch, so another split weights tokens differently")
    packing = bool(cfg.get("sample_packing"))
    if packing and mbs > 1 and not cfg.get("multipack_real_batches"):
        return Lever("micro_batch", False, f"{keep}: its packed micro batches are single bins of {mbs} sequences")
    total = mbs * ga
    tried: list[str] = []
    for micro in sorted((m for m in range(mbs + 1, total + 1) if total % m == 0 and m % mbs == 0), reverse=True):
        settings: dict[str, Any] = {"micro_batch_size": micro, "gradient_accumulation_steps": total // micro}
        if packing:
            settings["multipack_real_batches"] = True  # bins of sequence_len, as at micro batch 1
        if (why := reach.keeps_every_sequence(packing, micro, total)) is not None:
            tried.append(f"{micro}: {why}")
            continue
        ok, e = _fits(shape, {**cfg, **settings}, adapter, room, max_len)
        if ok:
            return Lever("micro_batch", True, f"micro batch {micro} x accumulation {total // micro} (the same global "
                                              f"batch of {total}, weighted per token: ~{e.needs_gib:.1f} GiB)", settings)
        tried.append(f"{micro}: ~{e.needs_gib:.1f} GiB")
    return Lever("micro_batch", False, f"{keep}: " + ("; ".join(tried[-2:]) if tried else "no larger divisor")
                 + (f", +{ESTIMATE_TOLERANCE:.0%}, against {room.describe()}" if any("GiB" in t for t in tried) else ""))


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
