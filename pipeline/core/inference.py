"""Models and examples for the checks that run after training: merge's logit check and the evaluation.

Everything here runs in pipeline's own process with transformers and peft (axolotl trains and merges;
this only reads what it wrote):

- `examples(cfg)`: the validation rows a resolved config names (`test_datasets`, else its `datasets`), as
  chat messages, with the user's plain passage and the reference rewrite split out;
- `encode(tokenizer, messages)`: token ids of a conversation through the tokenizer's chat template, and
  the mask of the last assistant turn (the tokens a `chat_template` dataset trains on);
- `load(...)`: the base model, the base model with the run's adapter (optionally 4-bit as QLoRA trained
  it), or a merged model, in eval mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import safeio

#: the instruction every user turn of the shipped data starts with (data/README.md)
INSTRUCTION_PREFIX = "Rewrite in the Visions of Gaea style:"


@dataclass(frozen=True)
class Example:
    messages: list[dict[str, str]]

    @property
    def prompt(self) -> list[dict[str, str]]:
        """The conversation up to (not including) the last assistant turn."""
        return self.messages[:-1]

    @property
    def reference(self) -> str:
        return self.messages[-1]["content"]

    @property
    def source(self) -> str:
        """The user's passage without the instruction prefix (the plain text the rewrite must keep)."""
        text = self.prompt[-1]["content"] if self.prompt else ""
        head, sep, rest = text.partition(":")
        return rest.strip() if sep and head.strip().lower().startswith("rewrite") else text.strip()


def _listed(cfg: Mapping[str, Any], key: str) -> list[Any]:
    value = cfg.get(key)
    return value if isinstance(value, list) else []  # a damaged run config names no rows


def examples(cfg: Mapping[str, Any], limit: int | None = None) -> list[Example]:
    """Rows ending in an assistant turn from the config's validation files (else its training files)."""
    entries = [e for e in _listed(cfg, "test_datasets") if isinstance(e, dict)] or \
              [e for e in _listed(cfg, "datasets") if isinstance(e, dict)]
    out: list[Example] = []
    for entry in entries:
        path = Path(str(entry.get("path", "")))
        if not safeio.present(path, "file"):
            continue
        field = entry.get("field_messages") if isinstance(entry.get("field_messages"), str) else None
        field = field or "messages"
        rows = safeio.lines(path, "data", max_bytes=safeio.data_bytes(), max_line=safeio.line_bytes(),
                            what=str(path))
        try:
            for n, line in rows:
                if not line.strip():
                    continue
                try:
                    row = safeio.json_loads(line)
                except ValueError:
                    raise safeio.BadFile("data-json", f"line {n} is not JSON; every line must be one JSON object",
                                         n) from None
                messages = row.get(field) if isinstance(row, dict) else None
                if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                    continue
                messages = [{"role": m.get("role") or m.get("from"), "content": m.get("content") or m.get("value")}
                            for m in messages]
                if messages and messages[-1]["role"] == "assistant":
                    out.append(Example(messages))
        except safeio.BadFile as exc:
            raise exc.user_error(path) from None
    return out[:limit] if limit else out


def encode(tokenizer: Any, messages: list[dict[str, str]], max_tokens: int = 1024) -> tuple[Any, Any]:
    """(input_ids [1, T], mask [1, T]) where mask marks the last assistant turn's tokens (its content and
    end-of-turn token): those that start after the chat template's generation prompt."""
    import torch

    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):  # a template that renders turns differently with the prompt flag
        raise ValueError("the chat template's generation prompt is not a prefix of the conversation")
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:max_tokens]
    mask = [int(start >= len(prompt)) for start, _end in enc["offset_mapping"][:max_tokens]]
    return torch.tensor([ids]), torch.tensor([mask])


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> Any:
    import torch

    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_of(name: Any) -> Any:
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    return table.get(str(name).replace("torch.", ""), torch.float32)


def training_dtype(cfg: Mapping[str, Any]) -> Any:
    """The dtype axolotl trained in: bf16/fp16 when the config enables them (and a GPU ran it), else fp32."""
    import torch

    on_gpu = torch.cuda.is_available()
    if on_gpu and cfg.get("bf16") in (True, "auto"):
        return torch.bfloat16
    if on_gpu and cfg.get("fp16") is True:
        return torch.float16
    return torch.float32


def offline_for(*refs: str | Path) -> bool:
    """Switch the hub off for this process when every model it loads is a local folder.

    Must run before transformers or huggingface_hub is imported (they read the variables at import):
    a local model then never waits on the hub, nor does bitsandbytes look its kernels up there.
    """
    if not refs or not all(Path(str(r)).exists() for r in refs):
        return False
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    return True


def load(path: str | Path, *, adapter: str | Path | None = None, dtype: Any = None,
         four_bit: Mapping[str, Any] | None = None) -> Any:
    """A causal LM in eval mode: `path` (base or merged), with `adapter` (peft) on top when given.

    four_bit: load the base quantized as QLoRA trains it (NF4 linear layers, double quantization; lm_head
    and the embeddings stay in `dtype`), with these BitsAndBytesConfig overrides.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if four_bit is not None:
        from transformers import BitsAndBytesConfig

        settings = {"load_in_4bit": True, "bnb_4bit_compute_dtype": dtype, "bnb_4bit_use_double_quant": True,
                    "bnb_4bit_quant_type": "nf4", "bnb_4bit_quant_storage": torch.bfloat16, **four_bit}
        kwargs["quantization_config"] = BitsAndBytesConfig(**settings)
        kwargs["device_map"] = {"": device()}
    model: Any = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if four_bit is None:
        model.to(device())
    else:
        _training_kernels(model)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model


def _training_kernels(model: Any) -> None:
    """Bitsandbytes' CPU inference kernel (AVX512-bf16, eval mode only) repacks 4-bit weights and needs
    layer sizes divisible by 32; QLoRA training used dequantize-then-matmul, which this selects."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def release() -> None:
    """Return the memory of models the caller has dropped (`del model` first)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
