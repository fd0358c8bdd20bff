"""The processor a multimodal checkpoint ships beside its weights, for random builds of its shape.

Axolotl treats a model whose config names a vision tower (Gemma-3 4B and up: `Gemma3ForConditionalGeneration`)
as multimodal and loads its processor (`AutoProcessor`) before the model, even for text-only training. A
real checkpoint ships one; a random build of the shape must too, or the run stops where a real one would
not. The processor wraps the pipeline's own tokenizer, with the image tokens the processor names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: model_type -> the special tokens its processor reads from the tokenizer (by attribute name)
IMAGE_TOKENS = {
    "gemma3": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
}


def needs_processor(raw: dict[str, Any]) -> bool:
    return isinstance(raw.get("vision_config"), dict) and raw.get("model_type") in IMAGE_TOKENS


def save_processor(raw: dict[str, Any], tok: Any, out: Path, chat_template: str) -> Any:
    """Add the image tokens to `tok`, save it and the model type's processor into `out`; the new tokenizer."""
    from transformers import Gemma3ImageProcessor, Gemma3Processor, PreTrainedTokenizerFast

    extra = IMAGE_TOKENS[raw["model_type"]]
    tok.add_special_tokens({"additional_special_tokens": list(extra.values())})
    tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, bos_token=tok.bos_token,
                                  eos_token=tok.eos_token, pad_token=tok.pad_token, extra_special_tokens=extra,
                                  clean_up_tokenization_spaces=False)
    tok.chat_template = chat_template
    tok.save_pretrained(out)
    Gemma3Processor(image_processor=Gemma3ImageProcessor(), tokenizer=tok, chat_template=chat_template).save_pretrained(out)
    return tok
