"""The rule engine: everything `pipeline check` finds in a config and its data, in seconds, with no
model weights and no GPU. It lives in the core so every stage runs it first (see `preflight`).

`check(loaded)` returns the findings; `inspect(loaded, target)` returns them with the facts a person
reads beside them (rows, steps, warmup, trainable parameters, a peak-VRAM estimate). Each rule has an
id, a severity and one line saying what is wrong and what to change; `RULES` lists them all (docs/check.md
is the long form).

Three sources, in this order:
1. axolotl's own schema: keys it does not know (it drops them silently) with the nearest valid key, and
   its own validation (the pydantic model `validate_config` uses), each error turned into a Finding;
2. the data the config names (`pipeline.core.data`);
3. rules for what axolotl accepts without a word (eval settings, adapter settings, the device, the
   schedule), using the model's shapes from its config.json (`pipeline.core.estimate`).

Where the run happens decides some rules (`Target`). `--device cpu` or `--device gpu` says it. Without
it (`auto`, what smoke and train use) a config on `pipeline://tiny-llama` is checked for a CPU when
CUDA does not answer here (it is the project's CPU config), and any other model for a GPU: the card
here if CUDA answers, else one named with `--gpu`, else an unknown card (bf16 support is not judged).
"""

from __future__ import annotations

import ast
import copy
import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import data, estimate, models
from pipeline.core.config import PIPELINE_KEY, LoadedConfig
from pipeline.core.errors import Finding

#: rule id -> (severity, what it catches); rules registered with @rule add themselves
RULES: dict[str, tuple[str, str]] = {
    "unknown-key": ("error", "a key axolotl's schema does not know (axolotl drops it and uses its default)"),
    "axolotl-validation": ("error", "axolotl's own validation rejects the config"),
    "plugin-import": ("error", "a plugin that does not import (axolotl logs it and trains on without it)"),
    "model-unknown": ("error", "a pipeline:// model that does not exist"),
    "architecture-unknown": ("warning", "the model's config.json is not available offline: estimate and "
                                        "shape rules skipped"),
    "data-missing": ("error", "a dataset file that does not exist"),
    "data-not-local": ("warning", "a dataset that is not a local file (not checked offline)"),
    "data-empty": ("error", "a dataset file with no rows"),
    "data-json": ("error", "a line that is not JSON"),
    "data-row": ("error", "a row that does not have the shape its `type` needs"),
    "data-role": ("error", "a chat message with a role axolotl does not know or the entry does not map"),
    "data-empty-content": ("error", "a message or field with empty content"),
    "data-no-trained-turn": ("error", "a chat row with no trained turn (it adds no loss)"),
    "data-type-unchecked": ("warning", "a dataset type or file format whose rows the check cannot read"),
    "data-duplicate": ("warning", "the same row twice in one file"),
    "data-leakage": ("error", "a test row (or its prompt) that is also in training"),
    "data-too-long": ("warning", "rows longer than sequence_len (axolotl drops or truncates them)"),
    "tokenizer-unavailable": ("warning", "the tokenizer is not available offline: token lengths not checked"),
}

Check = Callable[["Context"], Iterable[tuple[tuple[str | int, ...], str]]]
_CHECKS: list[tuple[str, str, Check]] = []


def rule(rule_id: str, severity: str, description: str) -> Callable[[Check], Check]:
    """Register a config rule: it yields (key path for the line, message)."""

    def register(fn: Check) -> Check:
        RULES[rule_id] = (severity, description)
        _CHECKS.append((rule_id, severity, fn))
        return fn

    return register


# --- where the run happens ----------------------------------------------------------------------------

@dataclass
class Target:
    """The device a config is checked for."""

    device: str  # "cpu" or "gpu"
    gpu: str | None = None
    capability: tuple[int, int] | None = None
    memory_gib: float | None = None
    why: str = ""

    @property
    def bf16(self) -> bool | None:
        return None if self.capability is None else self.capability >= (8, 0)

    def describe(self) -> str:
        if self.device == "cpu":
            return f"CPU ({self.why})"
        card = self.gpu or "unknown GPU"
        if self.capability:
            card += f" (sm_{self.capability[0]}{self.capability[1]})"
        if self.memory_gib:
            card += f", {self.memory_gib:g} GiB"
        return f"{card} ({self.why})"

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "gpu": self.gpu, "compute_capability": self.capability,
                "memory_gib": self.memory_gib, "why": self.why}


def _local_cuda() -> tuple[str, tuple[int, int]] | None:
    """The first visible GPU's name and compute capability, or None.

    Asked of NVML (milliseconds) rather than torch: importing torch and starting CUDA in the launching
    process cost seconds on the H100 host, before axolotl's own process pays them again. torch answers
    only where pynvml is not installed, or on a ROCm machine (no NVIDIA driver, /dev/kfd present).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return None
    try:
        import pynvml
    except ImportError:
        return _torch_cuda()
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVIDIA driver here; torch could still see a ROCm GPU
        return _torch_cuda() if os.path.exists("/dev/kfd") else None
    try:
        first = (visible or "0").split(",")[0].strip()
        handle = (pynvml.nvmlDeviceGetHandleByIndex(int(first)) if first.isdigit()
                  else pynvml.nvmlDeviceGetHandleByUUID(first))
        name = pynvml.nvmlDeviceGetName(handle)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return (name.decode() if isinstance(name, bytes) else str(name)), (int(major), int(minor))
    except Exception:  # noqa: BLE001 - a device NVML cannot describe: ask torch
        return _torch_cuda()
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _torch_cuda() -> tuple[str, tuple[int, int]] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0))  # type: ignore[return-value]


def target_for(loaded: LoadedConfig, device: str = "auto", gpu: str | None = None,
               gpu_mem_gib: float | None = None) -> Target:
    """The device to check a config for (the rule is in the module docstring)."""
    if device == "cpu":
        return Target("cpu", why="--device cpu")
    local = _local_cuda()
    if device == "auto" and gpu is None and local is None and \
            str(loaded.data.get("base_model", "")).startswith(f"{models.SCHEME}tiny-llama"):
        return Target("cpu", why="the tiny model with no CUDA here")
    if gpu is not None:
        return Target("gpu", gpu, estimate.gpu_capability(gpu), gpu_mem_gib, why="--gpu")
    if local is not None:
        return Target("gpu", local[0], local[1], gpu_mem_gib, why="the GPU here")
    return Target("gpu", None, None, gpu_mem_gib, why="a GPU config; name the card with --gpu to check bf16")


# --- what the rules look at ---------------------------------------------------------------------------

@dataclass
class Schedule:
    """Optimizer steps as axolotl computes them (utils/trainer.py calculate_total_num_steps)."""

    train_rows: int | None = None
    sequences: int | None = None  # rows, or packed sequences with sample_packing
    batch: int = 1
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    warmup_steps: int | None = None
    #: False: sequences and steps are upper bounds (token lengths bounded, not measured)
    exact: bool = True
    #: False: total_steps and warmup_steps are upper bounds
    total_exact: bool = True
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Context:
    loaded: LoadedConfig
    cfg: dict[str, Any]  # as written, without the pipeline: section
    axo: dict[str, Any] | None  # as axolotl's validation returns it (None where it rejects the config)
    target: Target
    shape: estimate.Shape | None = None
    sets: list[data.DataSet] = field(default_factory=list)
    schedule: Schedule = field(default_factory=Schedule)

    def get(self, key: str, default: Any = None) -> Any:
        """A setting as axolotl resolved it, else as written."""
        if self.axo is not None and self.axo.get(key) is not None:
            return self.axo[key]
        value = self.cfg.get(key)
        return default if value is None else value

    @property
    def adapter(self) -> str | None:
        a = self.cfg.get("adapter")
        return str(a) if a in ("lora", "qlora") else None


@dataclass
class Report:
    path: str
    findings: list[Finding]
    facts: dict[str, Any]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != "error"]


def check(loaded: LoadedConfig, target: Target | None = None) -> list[Finding]:
    """Every finding for one config (what the stages call before they run)."""
    return inspect(loaded, target).findings


def inspect(loaded: LoadedConfig, target: Target | None = None) -> Report:
    cfg = {k: v for k, v in loaded.data.items() if k != PIPELINE_KEY}
    target = target or target_for(loaded)
    where = str(loaded.path)
    found: list[Finding] = []

    mixins, problems = _plugins(loaded, cfg)
    found += problems
    found += unknown_keys(loaded, cfg, mixins)
    axo, problems = axolotl_validation(loaded, cfg, target, mixins)
    found += problems

    ctx = Context(loaded, cfg, axo, target)
    arch, problem = architecture(loaded, cfg)
    if problem:
        found.append(problem)
    if arch is not None:
        ctx.shape = estimate.shape(arch)
    ctx.sets, problems = data.check(loaded, axo or cfg)
    found += problems
    ctx.schedule = schedule(ctx)

    for rule_id, severity, fn in _CHECKS:
        for keys, message in fn(ctx):
            found.append(Finding(where, loaded.line(*keys) if keys else None, rule_id, message, severity))
    found = _drop_covered(found)
    return Report(where, found, _facts(ctx))


# --- axolotl's schema ---------------------------------------------------------------------------------

@contextmanager
def _quiet() -> Iterator[None]:
    """axolotl logs warnings while it validates (deprecations, auto-enabled kernels): not ours to print."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _plugins(loaded: LoadedConfig, cfg: Mapping[str, Any]) -> tuple[list[type], list[Finding]]:
    """The config's plugins, found as axolotl's `load_plugin` finds them, and the input-argument models
    they add to the schema. A plugin is read, not imported: importing one pulls in peft, datasets and
    axolotl's trainer stack (seconds); its module must exist and define the class, and the constant
    string its `get_input_args` returns names the arguments model, which is loaded from its own file.
    A plugin whose arguments cannot be read that way is imported for real."""
    mixins: list[type] = []
    found: list[Finding] = []
    plugins = cfg.get("plugins") or []
    if not plugins or not isinstance(plugins, list):
        return mixins, found
    for i, name in enumerate(plugins):
        try:
            if (args := _plugin_args(str(name))) is not None:
                mixins.append(args)
        except Exception as exc:  # noqa: BLE001 - axolotl would log it and train on without the plugin
            found.append(Finding(str(loaded.path), loaded.line("plugins", i), "plugin-import",
                                 f"plugin {name!r} does not load ({exc}); axolotl would log this and train without "
                                 f"it: fix the name or install its package"))
    return mixins, found


def _plugin_args(name: str) -> type | None:
    import importlib

    module, _, cls = name.rpartition(".")
    if not module:
        raise ImportError(f"{name!r} is not module.ClassName")
    source = _module_file(module) or _module_file(f"axolotl.integrations.{module}")
    if source is None:
        raise ImportError(f"no module named {module!r}")
    node = _find_class(source, cls)
    if node is None:
        raise ImportError(f"module {module!r} defines no class {cls!r}")
    ref = _returned_constant(node, "get_input_args")
    if ref is None and any(isinstance(n, ast.FunctionDef) and n.name == "get_input_args" for n in node.body):
        from axolotl.integrations.base import load_plugin  # dynamic: import the plugin as axolotl does

        with _quiet():
            ref = load_plugin(name).get_input_args()
    if not ref:
        return None
    args_module, _, args_cls = str(ref).rpartition(".")
    args_source = _module_file(args_module)
    args_node_file = _class_file(args_source, args_cls) if args_source else None
    if args_node_file is not None:
        spec = importlib.util.spec_from_file_location(f"_pipeline_plugin_args_{args_cls}", args_node_file)
        if spec is not None and spec.loader is not None:
            mod = importlib.util.module_from_spec(spec)
            try:
                with _quiet():
                    spec.loader.exec_module(mod)
                return getattr(mod, args_cls)
            except Exception:  # noqa: BLE001 - e.g. relative imports: fall back to the real import
                pass
    with _quiet():
        return getattr(importlib.import_module(args_module), args_cls)


def _module_file(module: str) -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _class_file(source: Path, cls: str, depth: int = 0) -> Path | None:
    """The file that defines `cls`, following `from .x import cls` re-exports."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for n in tree.body:
        if isinstance(n, ast.ClassDef) and n.name == cls:
            return source
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and any(a.name == cls and a.asname in (None, cls) for a in n.names) \
                and depth < 3:
            if n.level:
                base = source.parent
                for _ in range(n.level - 1):
                    base = base.parent
                target = base / Path(*(n.module or "").split("."))
                candidates = [target.with_suffix(".py"), target / "__init__.py"]
                nxt = next((c for c in candidates if c.is_file()), None)
            else:
                nxt = _module_file(n.module or "")
            if nxt is not None:
                return _class_file(nxt, cls, depth + 1)
    return None


def _find_class(source: Path, cls: str) -> ast.ClassDef | None:
    where = _class_file(source, cls)
    if where is None:
        return None
    tree = ast.parse(where.read_text(encoding="utf-8"))
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)


def _returned_constant(node: ast.ClassDef, method: str) -> str | None:
    for fn in node.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == method:
            returns = [r for r in ast.walk(fn) if isinstance(r, ast.Return)]
            if len(returns) == 1 and isinstance(returns[0].value, ast.Constant) and \
                    isinstance(returns[0].value.value, str):
                return returns[0].value.value
    return None


def _schema(mixins: list[type], capabilities: bool) -> type:
    from axolotl.utils.schemas.config import AxolotlConfigWCapabilities, AxolotlInputConfig

    base = AxolotlConfigWCapabilities if capabilities else AxolotlInputConfig
    if not mixins:
        return base
    return type(base.__name__, (base, *mixins), {})


def _dataset_model(cfg: Mapping[str, Any]) -> type:
    from axolotl.utils.schemas.datasets import DPODataset, KTODataset, SFTDataset

    rl = cfg.get("rl")
    return DPODataset if rl in ("dpo", "ipo", "simpo") else KTODataset if rl == "kto" else SFTDataset


def _model_in(annotation: Any) -> type | None:
    """The one pydantic model an annotation holds (through Optional, Annotated, list), if exactly one."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = {m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None}
    return found.pop() if len(found) == 1 else None


def _known(model: type) -> list[str]:
    names = []
    for name, f in model.model_fields.items():  # type: ignore[attr-defined]
        names.append(name)
        if isinstance(f.alias, str):
            names.append(f.alias)
    return names


def unknown_keys(loaded: LoadedConfig, cfg: Mapping[str, Any], mixins: list[type]) -> list[Finding]:
    """Keys axolotl's schema does not know, at the top level and inside the sections it models."""
    found: list[Finding] = []

    def walk(model: type, value: Mapping[str, Any], path: tuple[str | int, ...]) -> None:
        if model.model_config.get("extra") == "allow":  # type: ignore[attr-defined]
            return
        known = _known(model)
        fields = model.model_fields  # type: ignore[attr-defined]
        for key, sub in value.items():
            key = str(key)
            if not path and key == PIPELINE_KEY:
                continue
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}?" if near else "remove it or check the spelling"
                where = "" if not path else " in " + ".".join(str(p) for p in path)
                found.append(Finding(str(loaded.path), loaded.line(*path, key), "unknown-key",
                                     f"axolotl does not know {key!r}{where} and silently ignores it; {hint}"))
                continue
            name = next((n for n, f in fields.items() if key in (n, f.alias)), key)
            if not path and name in ("datasets", "test_datasets"):
                inner: type | None = _dataset_model(cfg)
            else:
                inner = _model_in(fields[name].annotation)
            if inner is None:
                continue
            items = list(enumerate(sub)) if isinstance(sub, list) else [(None, sub)]
            for i, item in items:
                if isinstance(item, Mapping):
                    walk(inner, item, (*path, key) if i is None else (*path, key, i))

    walk(_schema(mixins, capabilities=False), cfg, ())
    return found


def _capabilities(target: Target) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """What axolotl's `gpu_capabilities()` would report on the target (None: unknown card)."""
    import torch

    env = {"torch_version": str(torch.__version__).split("+", maxsplit=1)[0]}
    if target.device == "cpu":
        return {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "compute_capability": None}, env
    if target.capability is None:
        return None
    cc = target.capability
    return {"bf16": cc >= (8, 0), "fp8": cc >= (9, 0), "tf32": cc >= (8, 0), "n_gpu": 1,
            "compute_capability": f"sm_{cc[0]}{cc[1]}"}, env


def axolotl_validation(loaded: LoadedConfig, cfg: Mapping[str, Any], target: Target,
                       mixins: list[type]) -> tuple[dict[str, Any] | None, list[Finding]]:
    """Run axolotl's validation as `axolotl train` does (utils/config validate_config, with the target's
    capabilities); its errors become findings. Returns the validated config, or None if rejected."""
    from pydantic import ValidationError

    found: list[Finding] = []
    body = copy.deepcopy(dict(cfg))
    ds_model = _dataset_model(cfg)
    entries = body.get("datasets")
    if isinstance(entries, list):
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            try:
                with _quiet():
                    entries[i] = ds_model(**entry)
            except ValidationError as exc:
                found += _validation_findings(loaded, cfg, exc, ("datasets", i))
    if found:
        return None, found
    caps = _capabilities(target)
    model = _schema(mixins, capabilities=caps is not None)
    if caps is not None:
        body["capabilities"], body["env_capabilities"] = caps
    try:
        with _quiet():
            validated = model(**body).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        return None, _validation_findings(loaded, cfg, exc, ())
    except (ValueError, TypeError) as exc:
        return None, [Finding(str(loaded.path), None, "axolotl-validation",
                              f"axolotl rejects the config: {exc}; fix what it names")]
    return validated, found


def _validation_findings(loaded: LoadedConfig, cfg: Mapping[str, Any], exc: Any,
                         prefix: tuple[str | int, ...]) -> list[Finding]:
    found = []
    for err in exc.errors():
        # drop pydantic's union and validator tags (SFTDataset, function-after[...]) from the location
        loc = (*prefix, *[p for p in err.get("loc", ())
                          if isinstance(p, int) or not (str(p)[:1].isupper() or "[" in str(p))])
        msg = re.sub(r"^(Value|Assertion) error, ", "", str(err.get("msg", "")))
        line = loaded.line(*loc) if loc else None
        if line is None or not loc:  # a model-level check: point at the first key its message names
            named = [w for w in re.findall(r"[a-z][a-z0-9_]+", msg) if w in cfg]
            line = loaded.line(named[0]) if named else None
        where = ".".join(str(p) for p in loc)
        found.append(Finding(str(loaded.path), line, "axolotl-validation",
                             f"axolotl rejects {where + ': ' if where else 'the config: '}{msg}; change the config "
                             f"as its message says"))
    return found


#: axolotl errors that a rule of ours already reports, with more to say: the rule id and a piece of
#: axolotl's message
COVERED = {
    "eval-without-data": "not supported with val_set_size == 0",
    "test-datasets-with-val-set-size": "non-zero val_set_size should not be used with test_datasets",
    "qlora-without-4bit": "Require cfg.load_in_4bit to be True for qlora",
}


def _drop_covered(found: list[Finding]) -> list[Finding]:
    fired = {f.rule for f in found}
    pieces = [piece for rule_id, piece in COVERED.items() if rule_id in fired]
    return [f for f in found if not (f.rule == "axolotl-validation" and any(p in f.message for p in pieces))]


# --- the model's shape --------------------------------------------------------------------------------

def architecture(loaded: LoadedConfig, cfg: Mapping[str, Any]) -> tuple[dict[str, Any] | None, Finding | None]:
    """The model's config.json, from what ships here, a local folder or the local Hugging Face cache."""
    import json

    key = "base_model_config" if cfg.get("base_model_config") else "base_model"
    ref = str(cfg.get(key) or "")
    line = loaded.line(key)
    if not ref:
        return None, None
    if models.is_builtin(ref):
        name = ref[len(models.SCHEME):].strip("/")
        name = name.split("/", 1)[1] if name.startswith("random/") else name
        try:
            return models.architecture_config(name), None
        except KeyError as exc:
            return None, Finding(str(loaded.path), line, "model-unknown", f"{exc.args[0]}; fix {key}")
    if ref.lower() in models.HUB_ARCHITECTURES:
        return models.architecture_config(ref), None
    if (Path(ref) / "config.json").is_file():
        return json.loads((Path(ref) / "config.json").read_text()), None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(ref, local_files_only=True).to_dict(), None
    except Exception:  # noqa: BLE001 - not available offline, whatever the reason
        return None, Finding(str(loaded.path), line, "architecture-unknown",
                             f"{ref!r} has no config.json here (not shipped in pipeline/architectures, not a local "
                             f"folder, not in the Hugging Face cache): parameter counts, the memory estimate and "
                             f"the context-length check are skipped; add its config.json to "
                             f"pipeline/architectures/", "warning")


# --- the schedule -------------------------------------------------------------------------------------

def schedule(ctx: Context) -> Schedule:
    """Steps and warmup as axolotl will compute them: exact where token lengths were measured; where only
    upper bounds of the lengths are known (no tokenizer), upper bounds (`exact` False)."""
    mbs = _int(ctx.get("micro_batch_size", 1), 1)
    ga = _int(ctx.get("gradient_accumulation_steps", 1), 1)
    epochs = _float(ctx.get("num_epochs", 1), 1.0)
    seq = _int(ctx.get("sequence_len", 2048), 2048)
    s = Schedule(batch=max(mbs, 1) * max(ga, 1))
    train = [d for d in ctx.sets if d.key == "datasets"]
    local = [e for e in (ctx.cfg.get("datasets") or []) if isinstance(e, dict)]
    if ctx.get("val_set_size"):
        s.note = "val_set_size carves the validation rows at run time: steps not computed"
    elif train and len(train) == len(local):
        drops = str(ctx.get("excess_length_strategy") or "drop") != "truncate"
        rows = sum(len(d.rows) for d in train)
        if all(d.lengths for d in train):
            lengths = [n for d in train for n in d.lengths or []]
            if drops:
                lengths = [n for n in lengths if n <= seq]
            rows = len(lengths)
            if ctx.get("sample_packing"):
                s.sequences = _packed(lengths, mbs * seq, ctx) if lengths else 0
                s.note = "packed sequences from axolotl's multipack sampler on the measured token lengths"
        elif ctx.get("sample_packing") and all(d.bounds for d in train):
            # rows longer than seq are dropped (fewer bins) or fit: min(bound, seq) bounds both cases; First
            # Fit leaves at most one bin half empty, so bins <= 2 x tokens / capacity + 1 (plus bins closed
            # by the sample count cap)
            bound = sum(min(n, seq) for d in train for n in d.bounds or [])
            cap = _int(ctx.get("sample_packing_bin_size", 200), 200)
            s.sequences = min(rows, 2 * bound // (mbs * seq) + 1 + math.ceil(rows / max(cap, 1)))
            s.exact = False
            s.note = ("upper bounds: token lengths unknown (no tokenizer), bounded by the bytes of each "
                      "rendered row")
        elif ctx.get("sample_packing"):
            s.note = "sample_packing: steps need token lengths (tokenizer not available)"
        s.train_rows = rows
        if not ctx.get("sample_packing"):
            s.sequences = rows
        if s.sequences is not None:
            if ctx.get("sample_packing"):
                s.steps_per_epoch = max(1, s.sequences * mbs // s.batch)
                s.total_steps = int(math.floor(s.steps_per_epoch * epochs))
            else:
                s.steps_per_epoch = math.ceil(rows / s.batch) if rows else 0
                s.total_steps = math.ceil(rows * epochs / s.batch) if rows else 0
    s.total_exact = s.exact
    if ctx.cfg.get("max_steps"):
        s.total_steps = _int(ctx.cfg["max_steps"], 0)
        s.total_exact = True
    s.warmup_steps = _warmup(ctx, s.total_steps)
    return s


def _packed(lengths: list[int], capacity: int, ctx: Context) -> int:
    """Packed sequences per epoch from axolotl's own sampler (as calculate_total_num_steps builds it)."""
    import numpy as np
    from axolotl.utils.samplers.multipack import MultipackBatchSampler
    from torch.utils.data import SequentialSampler

    with _quiet():
        sampler = MultipackBatchSampler(
            sampler=SequentialSampler(range(len(lengths))), lengths=np.array(lengths), batch_size=1,
            batch_max_len=capacity, group_size=_int(ctx.get("sample_packing_group_size", 100_000), 100_000),
            bin_size=_int(ctx.get("sample_packing_bin_size", 200), 200), drop_last=True, num_processes=1)
        return len(sampler)


def _warmup(ctx: Context, total: int | None) -> int | None:
    """axolotl's warmup steps (core/builders/base.py _configure_warmup_and_logging)."""
    if ctx.cfg.get("warmup_steps") is not None:
        steps = _int(ctx.cfg["warmup_steps"], 0)
    elif total is None:
        return None
    elif ctx.cfg.get("warmup_ratio") is not None:
        steps = max(int(_float(ctx.cfg["warmup_ratio"], 0.0) * total), 0)
    else:
        steps = min(int(0.03 * total), 100)
    return 2 if steps == 1 else steps


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _n(x: int | float) -> str:
    return f"{x:,}"


# --- the rules ----------------------------------------------------------------------------------------

def _evaluates(cfg: Mapping[str, Any]) -> str | None:
    for key in ("eval_steps", "evals_per_epoch"):
        if cfg.get(key):
            return key
    if cfg.get("eval_strategy") not in (None, "no"):
        return "eval_strategy"
    return None


@rule("eval-without-data", "error", "evaluation asked for with val_set_size 0 and no test_datasets")
def _eval_without_data(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    key = _evaluates(ctx.cfg)
    if key and not _float(ctx.cfg.get("val_set_size") or 0, 0) and not ctx.cfg.get("test_datasets"):
        fate = ("axolotl rejects it" if key != "evals_per_epoch"
                else "axolotl accepts it and never evaluates")
        yield (key,), (f"{key} is set but val_set_size is 0 and there are no test_datasets: {fate}; add "
                       f"test_datasets (a pre-split validation file) or a val_set_size, or remove {key}")


@rule("test-datasets-with-val-set-size", "error", "test_datasets together with a non-zero val_set_size")
def _test_and_val(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.cfg.get("test_datasets") and _float(ctx.cfg.get("val_set_size") or 0, 0):
        yield ("val_set_size",), ("val_set_size is non-zero while test_datasets is set (axolotl rejects the "
                                  "pair); set val_set_size: 0 to evaluate on test_datasets")


@rule("eval-steps-beyond-run", "warning", "eval_steps larger than the run's optimizer steps")
def _eval_beyond(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    every, total = ctx.cfg.get("eval_steps"), ctx.schedule.total_steps
    if isinstance(every, int) and not isinstance(every, bool) and total and every > total:
        steps = f"{total}" if ctx.schedule.total_exact else f"at most {total}"
        yield ("eval_steps",), (f"eval_steps {every} is beyond the run's {steps} optimizer steps: it evaluates once "
                                f"before training and never again; use eval_steps <= {total} or evals_per_epoch")


def _embedding_leaves(ctx: Context) -> list[str]:
    if ctx.shape is None:
        return ["embed_tokens", "lm_head"]
    names = [ctx.shape.input_embedding, ctx.shape.output_embedding or ""]
    return [n.rsplit(".", 1)[-1] for n in names if n]


def _adds_tokens(cfg: Mapping[str, Any]) -> bool:
    return bool(cfg.get("tokens") or cfg.get("added_tokens_overrides") or cfg.get("special_tokens"))


@rule("modules-to-save-without-new-tokens", "warning",
      "lora_modules_to_save trains the embeddings while the config adds no tokens")
def _save_without_tokens(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    saved = [str(x) for x in (ctx.cfg.get("lora_modules_to_save") or [])]
    embeddings = [e for e in saved if e in _embedding_leaves(ctx)]
    if not ctx.adapter or not embeddings or _adds_tokens(ctx.cfg):
        return
    if ctx.shape is None:
        yield ("lora_modules_to_save",), (f"lora_modules_to_save {embeddings} trains full copies of the embeddings "
                                          f"though the config adds no tokens; remove it unless you add tokens")
        return
    added, _ = estimate.modules_to_save(ctx.shape, {"lora_modules_to_save": embeddings})
    shapes = [_weight_shape(ctx.shape, e) for e in embeddings]
    if len(set(shapes)) == 1 and shapes[0]:
        how = f"{len(shapes)} x " + " x ".join(_n(d) for d in shapes[0])
    else:
        how = " + ".join(_n(v) for v in added.values())
    lora = estimate.trainable(ctx.shape, {**ctx.cfg, "lora_modules_to_save": []}).lora
    extra = _extra_memory(ctx, embeddings)
    yield ("lora_modules_to_save",), (
        f"lora_modules_to_save {embeddings} adds {_n(sum(added.values()))} trainable parameters ({how}) to LoRA's "
        f"{_n(lora)}{extra}, though the config adds no tokens; remove it unless you add tokens to the vocabulary")


def _weight_shape(s: estimate.Shape, leaf: str) -> tuple[int, ...] | None:
    for name, dims in s.weight_shapes.items():
        if name == leaf or name.endswith("." + leaf):
            return dims
    return None


def _extra_memory(ctx: Context, saved: list[str]) -> str:
    if ctx.shape is None:
        return ""
    tokens = _tokens_per_micro_batch(ctx)
    adapter = ctx.adapter or "lora"
    cfg_without = {**ctx.cfg, "lora_modules_to_save": [e for e in (ctx.cfg.get("lora_modules_to_save") or [])
                                                       if e not in saved]}
    more = (estimate.peak_vram(ctx.shape, ctx.cfg, adapter, tokens).peak_gib
            - estimate.peak_vram(ctx.shape, cfg_without, adapter, tokens).peak_gib)
    return f" and about {more:.1f} GiB to the estimated peak" if more > 0.05 else ""


@rule("new-tokens-without-modules-to-save", "error",
      "new tokens with an adapter but the embeddings not in lora_modules_to_save")
def _tokens_without_save(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if not ctx.adapter or not ctx.cfg.get("tokens"):
        return
    need = _embedding_leaves(ctx)
    have = [str(x) for x in (ctx.cfg.get("lora_modules_to_save") or [])]
    if missing := [n for n in need if n not in have]:
        n = len(ctx.cfg["tokens"])
        yield ("tokens",), (f"tokens adds {n} new token{'s' if n != 1 else ''} but lora_modules_to_save lacks "
                            f"{missing}: their embeddings would stay untrained and axolotl stops at model load; add "
                            f"lora_modules_to_save: {need}")


@rule("qlora-without-4bit", "error", "adapter: qlora without load_in_4bit: true")
def _qlora_4bit(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.cfg.get("adapter") == "qlora" and not ctx.cfg.get("load_in_4bit") and not ctx.cfg.get("merge_lora"):
        yield ("adapter",), "adapter: qlora needs the base loaded in 4 bits (axolotl rejects it); add load_in_4bit: true"


@rule("lora-target-missing", "error", "a lora_target_modules or lora_modules_to_save entry that matches no module")
def _target_missing(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if not ctx.adapter or ctx.shape is None:
        return
    leaves = sorted(ctx.shape.leaf_names)
    for key, missing in (("lora_target_modules", estimate.lora_targets(ctx.shape, ctx.cfg)[1]),
                         ("lora_modules_to_save", estimate.modules_to_save(ctx.shape, ctx.cfg)[1])):
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
    defaults = estimate.default_targets(ctx.shape.model_type)
    lora = estimate.trainable(ctx.shape, ctx.cfg).lora
    yield ("adapter",), (f"neither lora_target_linear nor lora_target_modules is set: peft falls back to "
                         f"{defaults or 'nothing'} for {ctx.shape.model_type} ({_n(lora)} trainable parameters); set "
                         f"lora_target_linear: true or name the modules")


@rule("lora-range", "error", "lora_r, lora_alpha or lora_dropout out of range")
def _lora_range(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if not ctx.adapter:
        return
    r, alpha, dropout = ctx.cfg.get("lora_r"), ctx.cfg.get("lora_alpha"), ctx.cfg.get("lora_dropout")
    if r is not None and _float(r, 0) < 1:
        yield ("lora_r",), f"lora_r {r!r} must be a whole number >= 1 (8-64 is usual); fix lora_r"
    if alpha is not None and _float(alpha, 0) <= 0:
        yield ("lora_alpha",), f"lora_alpha {alpha!r} must be positive (often 2 x lora_r); fix lora_alpha"
    if dropout is not None and not 0 <= _float(dropout, -1) < 1:
        yield ("lora_dropout",), f"lora_dropout {dropout!r} must be in [0, 1) (0.0-0.1 is usual); fix lora_dropout"


@rule("learning-rate-range", "error", "learning_rate that is not a number in (0, 1)")
def _lr_range(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    lr = ctx.cfg.get("learning_rate")
    if lr is not None and not 0 < _float(lr, -1) < 1:
        yield ("learning_rate",), (f"learning_rate {lr!r} is not a number between 0 and 1 (LoRA uses 1e-5 to 1e-3; "
                                   f"write it as 2.0e-4 or 0.0002); fix learning_rate")


@rule("batch-range", "error", "micro_batch_size, gradient_accumulation_steps or num_epochs below 1")
def _batch_range(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for key in ("micro_batch_size", "gradient_accumulation_steps"):
        value = ctx.cfg.get(key)
        if value is not None and _int(value, 0) < 1:
            yield (key,), f"{key} {value!r} must be a whole number >= 1; fix {key}"
    epochs = ctx.cfg.get("num_epochs")
    if epochs is not None and _float(epochs, 0) <= 0 and not ctx.cfg.get("max_steps"):
        yield ("num_epochs",), f"num_epochs {epochs!r} trains nothing; set num_epochs >= 1 or max_steps"


@rule("bf16-unsupported", "error", "bf16: true on a GPU without bf16 (before Ampere)")
def _bf16_gpu(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    t = ctx.target
    if t.device == "gpu" and t.bf16 is False and (ctx.cfg.get("bf16") is True or ctx.cfg.get("bfloat16") is True):
        key = "bf16" if ctx.cfg.get("bf16") is True else "bfloat16"
        yield (key,), (f"{key}: true on {t.gpu} (sm_{t.capability[0]}{t.capability[1]}), which has no bf16 (it needs "  # type: ignore[index]
                       f"sm_80+): training fails; use bf16: auto (fp16 on this card) or fp16: true")


@rule("cpu-bf16", "error", "bf16: true on a CPU-only run (transformers refuses it)")
def _cpu_bf16(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.target.device == "cpu" and ctx.cfg.get("bf16") is True:
        yield ("bf16",), ("bf16: true on a CPU run stops after data preparation (\"Your setup doesn't support "
                          "bf16/gpu\"); set bf16: false and fp16: false")


@rule("cpu-fp16", "warning", "bf16: auto or fp16 on a CPU-only run (fp16 autocast, several times slower)")
def _cpu_fp16(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.target.device != "cpu":
        return
    bf16, fp16 = ctx.cfg.get("bf16", "auto"), ctx.cfg.get("fp16")
    if fp16 is True or (bf16 == "auto" and fp16 is None and not ctx.cfg.get("float16")):
        key = "fp16" if fp16 is True else "bf16" if "bf16" in ctx.cfg else "base_model"
        said = "fp16: true" if fp16 is True else "bf16: auto" + (" (the default)" if "bf16" not in ctx.cfg else "")
        yield (key,), (f"{said} on a CPU run means fp16 autocast (axolotl finds no bf16 GPU), several times slower "
                       f"than float32; set bf16: false and fp16: false")


@rule("cpu-lora-kernels", "error", "axolotl's Triton LoRA kernels on a CPU-only run")
def _cpu_kernels(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ctx.target.device != "cpu" or not ctx.adapter or ctx.axo is None:
        return
    names = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel")
    on = [k for k in names if ctx.axo.get(k)]
    if not on:
        return
    auto = not any(k in ctx.cfg for k in (*names, "lora_embedding_kernel"))
    why = "axolotl switches them on when none is set" if auto else "they are set to true"
    yield ((on[0],) if on[0] in ctx.cfg else ("adapter",)), (
        f"{', '.join(on)} use Triton kernels that need CUDA ({why}): the run dies with \"Torch not compiled with "
        f"CUDA\"; set lora_mlp_kernel, lora_qkv_kernel and lora_o_kernel to false")


def _tokens_per_micro_batch(ctx: Context) -> int:
    mbs = max(_int(ctx.get("micro_batch_size", 1), 1), 1)
    seq = _int(ctx.get("sequence_len", 2048), 2048)
    if ctx.get("sample_packing") or ctx.get("pad_to_sequence_len"):
        return mbs * seq
    lengths = [n for d in ctx.sets if d.key == "datasets" for n in (d.lengths or [])]
    return mbs * (min(seq, max(lengths)) if lengths else seq)


def _estimates(ctx: Context) -> dict[str, estimate.Estimate]:
    if ctx.shape is None:
        return {}
    tokens = _tokens_per_micro_batch(ctx)
    return {a: estimate.peak_vram(ctx.shape, ctx.cfg, a, tokens) for a in ("lora", "qlora")}


def margin_gib(card_gib: float) -> float:
    """Room left beside the estimate: the caching allocator's reserve (0.8-0.9 GiB over allocated in the
    measured runs) and the CUDA context, which torch does not count."""
    return max(1.5, 0.05 * card_gib)


def recommendation(ctx: Context, card_gib: float) -> str:
    est = _estimates(ctx)
    if not est:
        return "no estimate (architecture unknown)"
    room = card_gib - margin_gib(card_gib)
    lora, qlora = est["lora"].peak_gib, est["qlora"].peak_gib
    if lora <= room:
        return (f"LoRA fits a {card_gib:g} GiB card (~{lora:.1f} GiB): use it; no quantisation error and faster than "
                f"QLoRA (~{qlora:.1f} GiB)")
    if qlora <= room:
        return f"QLoRA (~{qlora:.1f} GiB) fits a {card_gib:g} GiB card; LoRA (~{lora:.1f} GiB) does not"
    levers = ["lower sequence_len or micro_batch_size"]
    if not ctx.get("gradient_checkpointing"):
        levers.append("enable gradient_checkpointing")
    if not (ctx.get("liger_fused_linear_cross_entropy") or ctx.get("cut_cross_entropy")):
        levers.append("use a fused cross-entropy (Liger's liger_fused_linear_cross_entropy), which never holds the "
                      "logits")
    return (f"neither fits a {card_gib:g} GiB card (LoRA ~{lora:.1f}, QLoRA ~{qlora:.1f} GiB): "
            + ", or ".join(levers))


@rule("vram-exceeds-gpu", "error", "the estimated peak of the config's adapter does not fit --gpu-mem")
def _vram(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    card = ctx.target.memory_gib
    if not card or ctx.target.device != "gpu" or not ctx.adapter:
        return
    est = _estimates(ctx)
    if not est:
        return
    mine = est[ctx.adapter].peak_gib
    if mine > card - margin_gib(card):
        yield ("adapter",), (f"{ctx.adapter} is estimated at ~{mine:.1f} GiB peak, more than a {card:g} GiB card leaves "
                             f"(~{card - margin_gib(card):.1f} GiB); {recommendation(ctx, card)}")


@rule("sequence-len-above-context", "warning", "sequence_len above the model's context length")
def _context(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    seq = ctx.cfg.get("sequence_len")
    limit = ctx.shape.max_positions if ctx.shape else None
    if seq and limit and _int(seq, 0) > limit:
        yield ("sequence_len",), (f"sequence_len {seq} is above the model's context of {_n(limit)} tokens (axolotl "
                                  f"only warns); set sequence_len <= {limit}")


@rule("warmup-longer-than-training", "error", "warmup as long as the whole run, or longer")
def _warmup_long(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    ratio = ctx.cfg.get("warmup_ratio")
    if ratio is not None and _float(ratio, 0) >= 1:
        yield ("warmup_ratio",), f"warmup_ratio {ratio} warms up for the whole run; use 0.03-0.1"
        return
    total, steps = ctx.schedule.total_steps, ctx.cfg.get("warmup_steps")
    if steps is not None and total and ctx.schedule.total_exact and _int(steps, 0) >= total:
        yield ("warmup_steps",), (f"warmup_steps {steps} >= the run's {total} optimizer steps: the learning rate never "
                                  f"reaches {ctx.cfg.get('learning_rate')}; use warmup_steps: {max(2, total // 10)} "
                                  f"or warmup_ratio: 0.1")


@rule("warmup-ratio-no-warmup", "warning", "warmup_ratio that rounds down to no warmup on this data")
def _warmup_zero(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    ratio, total = ctx.cfg.get("warmup_ratio"), ctx.schedule.total_steps
    if ratio is not None and 0 < _float(ratio, 0) < 1 and total and ctx.schedule.warmup_steps == 0:
        steps = f"{total}" if ctx.schedule.total_exact else f"at most {total}"
        yield ("warmup_ratio",), (f"warmup_ratio {ratio} x {steps} optimizer steps rounds down to 0 warmup steps "
                                  f"(axolotl truncates), so the run starts at the full learning rate; set "
                                  f"warmup_steps: 2 or more, or add data")


@rule("batch-larger-than-dataset", "warning", "an effective batch larger than the training set")
def _batch_vs_data(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    s = ctx.schedule
    if s.sequences and s.batch > s.sequences:
        what = "packed sequences" if ctx.get("sample_packing") else "rows"
        yield ("gradient_accumulation_steps",), (
            f"one optimizer step wants {s.batch} sequences (micro_batch_size x gradient_accumulation_steps) but "
            f"training has {'' if s.exact else 'at most '}{s.sequences} {what}: an epoch is less than one full step; lower "
            f"gradient_accumulation_steps to {max(1, s.sequences // max(_int(ctx.get('micro_batch_size', 1), 1), 1))} "
            f"or less")


@rule("output-dir-exists", "warning", "an output_dir that already holds an earlier run")
def _output_dir(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    out = Path(str(ctx.cfg.get("output_dir") or "./model-out"))
    if out.is_dir() and (contents := sorted(p.name for p in out.iterdir())):
        shown = ", ".join(contents[:3]) + (" ..." if len(contents) > 3 else "")
        yield ("output_dir",), (f"output_dir {out} already holds an earlier run ({shown}): `axolotl train` on this "
                                f"config would write over it (pipeline train writes into its own run folder); point "
                                f"output_dir at a new folder")


# --- facts beside the findings ------------------------------------------------------------------------

def _facts(ctx: Context) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "target": ctx.target.as_dict() | {"described": ctx.target.describe()},
        "base_model": ctx.cfg.get("base_model"),
        "adapter": ctx.adapter,
        "data": [d.stats() for d in ctx.sets],
        "schedule": ctx.schedule.as_dict(),
    }
    if ctx.shape is not None:
        t = estimate.trainable(ctx.shape, ctx.cfg) if ctx.adapter else estimate.Trainable(0)
        facts["params"] = {"total": ctx.shape.total_params, "trainable": t.total, "lora": t.lora,
                           "modules_to_save": t.saved,
                           "trainable_percent": round(100 * t.total / ctx.shape.total_params, 3)}
        facts["memory"] = {a: e.as_dict() for a, e in _estimates(ctx).items()}
        if ctx.target.memory_gib:
            facts["memory"]["gpu_mem_gib"] = ctx.target.memory_gib
            facts["memory"]["recommendation"] = recommendation(ctx, ctx.target.memory_gib)
    return facts
