"""Which architecture x adapter x settings axolotl starts, and which it crashes on: the measured matrix.

Axolotl's LoRA kernels, Liger's patches, sample packing and the attention backends are each implemented
per architecture, and axolotl's validation accepts combinations its start-up then crashes on (Phi-3's
fused q/k/v projection and the LoRA QKV kernel: `AssertionError: Original QKV code not found`).
`benchmarks/startup_matrix.py` runs a 2-step smoke of every shipped architecture under the shipped configs on a
GPU, and, where one crashes, each candidate setting that might avoid it; its results ship in
`pipeline/architectures/compat.json`, keyed by the axolotl version they were measured with.

A config is compared with the measured trials through its *projection*: the few settings that decide
which of those code paths run (`SETTINGS`), as axolotl resolves them (it switches its LoRA kernels on by
itself). A trial with the same projection on the same architecture and adapter says `ran` or `crashes`;
no such trial is `untested`. `PIPELINE_COMPAT_FILE` names another data file (the matrix script uses an
empty one, so that it can run the combinations the shipped data already knows to crash).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "architectures" / "compat.json"
DATA_ENV = "PIPELINE_COMPAT_FILE"

KERNELS = ("lora_qkv_kernel", "lora_o_kernel", "lora_mlp_kernel", "lora_embedding_kernel")
LIGER_PLUGIN = "axolotl.integrations.liger.LigerPlugin"
LIGER_FLAGS = ("liger_rope", "liger_rms_norm", "liger_glu_activation", "liger_layer_norm",
               "liger_fused_linear_cross_entropy", "liger_cross_entropy")
#: axolotl 0.19's legacy attention switches and the attn_implementation each stands for (its schemas/enums.py
#: LEGACY_ATTN_FLAG_TO_IMPL, in its order of priority)
ATTENTION = {"xformers_attention": "xformers", "sage_attention": "sage", "flex_attention": "flex_attention",
             "flash_attention": "flash_attention_2", "sdp_attention": "sdpa", "eager_attention": "eager"}
#: what a projection holds: the settings whose code is written per architecture
SETTINGS = (*KERNELS, "liger", *LIGER_FLAGS, "sample_packing", "attention")

RAN, CRASHES, UNTESTED = "ran", "crashes", "untested"


def project(get: Callable[[str], Any], adapter: str | None) -> dict[str, Any]:
    """The settings of a config that decide which per-architecture code runs. `get(key)` is a setting as
    axolotl resolved it; adapter: "lora", "qlora" or None (a full fine-tune, where no LoRA kernel runs)."""
    plugins = get("plugins")
    liger = isinstance(plugins, list) and any(str(p) == LIGER_PLUGIN for p in plugins)
    out: dict[str, Any] = {k: bool(adapter and get(k)) for k in KERNELS}
    out["liger"] = liger
    out.update({k: bool(liger and get(k)) for k in LIGER_FLAGS})
    out["sample_packing"] = bool(get("sample_packing"))
    out["attention"] = get("attn_implementation") or next((v for k, v in ATTENTION.items() if get(k)), "default")
    return out


def _data_path() -> Path:
    return Path(os.environ.get(DATA_ENV) or DATA)


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> dict[str, Any]:
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable or not JSON: nothing was measured
        return {}
    return loaded if isinstance(loaded, dict) else {}


def data() -> dict[str, Any]:
    """The measured matrix: {axolotl version: {"measured_on": {...}, "shapes": {arch: {adapter: [trial]}}}}."""
    path = _data_path()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return {}
    return _load(str(path), stamp)


def setting_changes(frm: Mapping[str, Any], to: Mapping[str, Any]) -> dict[str, Any]:
    """The config settings that turn projection `frm` into `to` (the liger switch is the plugins list)."""
    out: dict[str, Any] = {}
    for key in SETTINGS:
        if frm.get(key) == to.get(key):
            continue
        if key == "liger":
            out["plugins"] = [LIGER_PLUGIN] if to[key] else []
            if not to[key]:  # without the plugin its settings are keys axolotl does not know
                out.update({k: None for k in LIGER_FLAGS if frm.get(k)})
        elif key == "attention":  # the legacy switches, as the shipped configs write them
            flag = {impl: name for name, impl in ATTENTION.items()}
            if frm.get(key) in flag:
                out[flag[frm[key]]] = False
            if to.get(key) in flag:
                out[flag[to[key]]] = True
            elif to.get(key) != "default":
                out["attn_implementation"] = to.get(key)
        elif key in LIGER_FLAGS and not to.get("liger"):
            continue  # the flags mean nothing without the plugin
        else:
            out[key] = to.get(key)
    return out


def as_set(changes: Mapping[str, Any]) -> str:
    """`--set k=v` arguments that apply `changes` on the command line."""
    def value(v: Any) -> str:
        return "" if v is None else json.dumps(v) if isinstance(v, (bool, list)) else str(v)
    return " ".join(f"--set {k}={value(v)}" for k, v in changes.items())


def judge(arch: str | None, adapter: str | None, settings: Mapping[str, Any], axolotl: str | None) -> dict[str, Any]:
    """What the measured matrix says of one config: `status` (ran, crashes or untested), what it was measured
    on, and for a crash axolotl's error and the fewest setting changes that ran (`fix`, with its `--set`)."""
    kind = adapter or "full"
    out: dict[str, Any] = {"status": UNTESTED, "architecture": arch, "adapter": kind, "axolotl": axolotl}
    table = data()
    if arch is None:
        out["why"] = "not a shipped architecture (pipeline/architectures): never measured"
        return out
    entry = table.get(axolotl or "")
    if not isinstance(entry, dict):
        measured = ", ".join(sorted(table))
        out["why"] = f"measured with axolotl {measured}, not {axolotl}" if measured else \
            "no measured matrix ships here (pipeline/architectures/compat.json)"
        return out
    out["measured_on"] = entry.get("measured_on", {})
    trials = [t for t in entry.get("shapes", {}).get(arch, {}).get(kind, []) if isinstance(t, dict)]
    if not trials:
        out["why"] = f"{arch} with {kind} was not measured"
        return out
    wanted = {k: settings.get(k) for k in SETTINGS}
    same = [t for t in trials if {k: t.get("settings", {}).get(k) for k in SETTINGS} == wanted]
    if not same:
        out["why"] = f"{arch} with {kind} was measured, but not with these settings"
        return out
    trial = same[0]
    out["status"] = trial["status"]
    out.update({k: trial[k] for k in ("tokens_per_s", "peak_gib", "error", "where") if trial.get(k) is not None})
    if trial["status"] == CRASHES:
        ran = [t for t in trials if t.get("status") == RAN]
        if ran:
            best, changes = min(((t, setting_changes(wanted, t["settings"])) for t in ran), key=lambda tc: len(tc[1]))
            out["fix"] = {"settings": changes, "set": as_set(changes),
                          **{k: best[k] for k in ("tokens_per_s", "peak_gib") if best.get(k) is not None}}
    return out
