"""Rules judged against the model's shape: LoRA targets it lacks, embeddings trained for nothing, new
tokens left untrained, a sequence beyond its context."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.checks import estimate, shapes, trained
from pipeline.checks.context import Context, as_int, count
from pipeline.checks.memory import tokens_per_micro_batch
from pipeline.checks.registry import rule


def _embedding_leaves(ctx: Context) -> list[str]:
    if ctx.shape is None:
        return ["embed_tokens", "lm_head"]
    names = [ctx.shape.input_embedding, ctx.shape.output_embedding or ""]
    return [n.rsplit(".", 1)[-1] for n in names if n]



def _adds_tokens(ctx: Context) -> bool:
    """Whether the config adds tokens to the vocabulary: `tokens` or `special_tokens` that the tokenizer does
    not already hold (where that cannot be known, they count as new)."""
    cfg = ctx.cfg
    if cfg.get("added_tokens_overrides"):
        return True
    named = _named_tokens(cfg)
    if not named:
        return False
    have = _tokenizer_has(ctx)
    return have is None or any(t not in have for t in named)


def _named_tokens(cfg: Mapping[str, Any]) -> list[str]:
    special = cfg.get("special_tokens") or {}
    named = [str(t) for t in (cfg.get("tokens") or [])]
    if isinstance(special, Mapping):
        for value in special.values():
            named += [str(v) for v in value] if isinstance(value, list) else [str(value)] if value else []
    return named


def _tokenizer_has(ctx: Context) -> set[str] | None:
    """The tokens the model's tokenizer holds: all of them where the tokenizer loads here, the special ones of
    a shipped shape otherwise (architectures/special_tokens.json), else None."""
    from pipeline.checks import lengths
    from pipeline.core import models

    tokenizer, _ = lengths.tokenizer_for(ctx.cfg)
    if tokenizer is not None:
        return set(tokenizer.get_vocab())
    ref = str(ctx.cfg.get("tokenizer_config") or ctx.cfg.get("base_model") or "")
    name = models.shipped_name(ref)
    return models.known_tokens(name) if name else None



@rule("modules-to-save-without-new-tokens", "warning",
      "lora_modules_to_save trains the embeddings while the config adds no tokens")
def _save_without_tokens(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    saved = [str(x) for x in (ctx.cfg.get("lora_modules_to_save") or [])]
    embeddings = [e for e in saved if e in _embedding_leaves(ctx)]
    if not ctx.adapter or not embeddings or _adds_tokens(ctx):
        return
    named = _named_tokens(ctx.cfg)
    none_new = f" (the tokenizer already has {', '.join(dict.fromkeys(named))})" if named else ""
    if ctx.shape is None:
        yield ("lora_modules_to_save",), (f"lora_modules_to_save {embeddings} trains full copies of the embeddings "
                                          f"though the config adds no tokens{none_new}; remove it unless you add tokens")
        return
    added, _ = trained.modules_to_save(ctx.shape, {"lora_modules_to_save": embeddings})
    shapes = [_weight_shape(ctx.shape, e) for e in embeddings]
    if len(set(shapes)) == 1 and shapes[0]:
        how = f"{len(shapes)} x " + " x ".join(count(d) for d in shapes[0])
    else:
        how = " + ".join(count(v) for v in added.values())
    lora = trained.trainable(ctx.shape, {**ctx.cfg, "lora_modules_to_save": []}).lora
    extra = _extra_memory(ctx, embeddings)
    yield ("lora_modules_to_save",), (
        f"lora_modules_to_save {embeddings} adds {count(sum(added.values()))} trainable parameters ({how}) to LoRA's "
        f"{count(lora)}{extra}, though the config adds no tokens{none_new}; remove it unless you add tokens to the "
        f"vocabulary")



def _weight_shape(s: shapes.Shape, leaf: str) -> tuple[int, ...] | None:
    for name, dims in s.weight_shapes.items():
        if name == leaf or name.endswith("." + leaf):
            return dims
    return None



def _extra_memory(ctx: Context, saved: list[str]) -> str:
    if ctx.shape is None:
        return ""
    tokens = tokens_per_micro_batch(ctx)
    adapter = ctx.adapter or "lora"
    cfg_without = {**ctx.cfg, "lora_modules_to_save": [e for e in (ctx.cfg.get("lora_modules_to_save") or [])
                                                       if e not in saved]}
    more = (estimate.peak_vram(ctx.shape, ctx.cfg, adapter, tokens).peak_gib
            - estimate.peak_vram(ctx.shape, cfg_without, adapter, tokens).peak_gib)
    return f" and about {more:.1f} GiB to the estimated peak" if more > 0.05 else ""



@rule("new-tokens-without-modules-to-save", "error",
      "new tokens with an adapter but the embeddings not in lora_modules_to_save")
def _tokens_without_save(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if not ctx.adapter or not ctx.cfg.get("tokens") or not _adds_tokens(ctx):
        return
    need = _embedding_leaves(ctx)
    have = [str(x) for x in (ctx.cfg.get("lora_modules_to_save") or [])]
    if missing := [n for n in need if n not in have]:
        n = len(ctx.cfg["tokens"])
        yield ("tokens",), (f"tokens adds {n} new token{'s' if n != 1 else ''} but lora_modules_to_save lacks "
                            f"{missing}: their embeddings would stay untrained and axolotl stops at model load; add "
                            f"lora_modules_to_save: {need}")



@rule("lora-target-missing", "error", "a lora_target_modules or lora_modules_to_save entry that matches no module")
def _target_missing(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if not ctx.adapter or ctx.shape is None:
        return
    leaves = sorted(ctx.shape.leaf_names)
    for key, missing in (("lora_target_modules", trained.lora_targets(ctx.shape, ctx.cfg)[1]),
                         ("lora_modules_to_save", trained.modules_to_save(ctx.shape, ctx.cfg)[1])):
        for entry in missing:
            near = difflib.get_close_matches(entry, leaves, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}?" if near else f"module names here: {', '.join(leaves[:12])}"
            yield (key,), (f"{key} entry {entry!r} matches no module of {ctx.shape.model_type} (peft skips it "
                           f"silently when another entry matches); {hint}")



@rule("lora-targets-default", "warning", "a LoRA adapter with no target modules named (peft's default applies)")
def _targets_default(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if not ctx.adapter or ctx.cfg.get("lora_target_modules") or ctx.cfg.get("lora_target_linear") \
            or ctx.cfg.get("lora_target_parameters"):
        return
    if ctx.shape is None:
        return
    defaults = trained.default_targets(ctx.shape.model_type)
    lora = trained.trainable(ctx.shape, ctx.cfg).lora
    yield ("adapter",), (f"neither lora_target_linear nor lora_target_modules is set: peft falls back to "
                         f"{defaults or 'nothing'} for {ctx.shape.model_type} ({count(lora)} trainable parameters); set "
                         f"lora_target_linear: true or name the modules")



@rule("sequence-len-above-context", "warning", "sequence_len above the model's context length")
def _context(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    seq = ctx.cfg.get("sequence_len")
    limit = ctx.shape.max_positions if ctx.shape else None
    if seq and limit and as_int(seq, 0) > limit:
        yield ("sequence_len",), (f"sequence_len {seq} is above the model's context of {count(limit)} tokens (axolotl "
                                  f"only warns); set sequence_len <= {limit}")
