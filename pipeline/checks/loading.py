"""Can the run load its base model, and which Python of the model's own would it run?

`model(...)` turns what the hub or the disk says (`hub.ask`) into one line a person can act on:
`model-unavailable` where the answer is final (not on the hub, gated, a folder without config.json or
weights), `model-offline` where nobody could be asked (HF_HUB_OFFLINE, no network) and the model is not in
the cache: a warning for `pipeline check`, which may run on another machine than the training, and an error
for `smoke` and `train`, which run here. `remote_code(...)` names the files `trust_remote_code` would run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.checks import hub
from pipeline.core import models
from pipeline.core.config import LoadedConfig
from pipeline.core.errors import Finding


def model(loaded: LoadedConfig, cfg: Mapping[str, Any]) -> list[Finding]:
    """Findings for the base model (and a tokenizer named apart) that a run could not load."""
    found = []
    seen = set()
    for key in ("base_model", "tokenizer_config"):
        ref = cfg.get(key)
        if not isinstance(ref, str) or not ref or models.is_builtin(ref) or ref in seen:
            continue
        seen.add(ref)
        answer = hub.ask(ref, cfg.get("revision_of_model") if key == "base_model" else None)
        if answer.loadable:
            if (f := _needs_own_code(loaded, cfg, key, answer)) is not None:
                found.append(f)
            continue
        rule = "model-offline" if answer.state in ("offline", "unreachable") else "model-unavailable"
        found.append(Finding(str(loaded.path), loaded.line(key), rule, _say(key, answer), _severity(rule)))
    return found


def _severity(rule: str) -> str:
    from pipeline.checks.registry import severity

    return severity(rule)


def _other_way(ref: str) -> str:
    """The run that needs no download: random weights in the model's exact shape, where it ships here."""
    name = models.HUB_ARCHITECTURES.get(ref.lower())
    return f"; or measure memory and speed on its exact shape with random weights: " \
           f"--set base_model={models.SCHEME}random/{name}" if name else ""


def _say(key: str, a: hub.Answer) -> str:
    from huggingface_hub import constants

    page = f"{constants.ENDPOINT.rstrip('/')}/{a.ref}"
    if a.state == "not-found":
        token = ("the token in HF_TOKEN cannot see it either" if hub.token_set()
                 else "if it is private, set HF_TOKEN to a token that can read it")
        return (f"{key} {a.ref!r} is not on the Hugging Face hub ({a.detail}) nor a folder here: axolotl would stop "
                f"at model load; fix the id (hub ids look like meta-llama/Llama-3.1-8B; {token}) or the path")
    if a.state == "gated":
        if a.detail == "HTTP 403":
            what = (f"the token in HF_TOKEN has no access yet: accept the licence at {page} with that account "
                    f"(access can take a while to be granted)")
        else:
            what = (f"accept its licence at {page}, then set HF_TOKEN to a token of that account (pipeline, "
                    f"axolotl and huggingface_hub read it)")
        return f"{key} {a.ref!r} is gated: {what}{_other_way(a.ref)}"
    if a.state == "incomplete":
        return f"{key} {a.ref!r} cannot be loaded: {a.detail}; point {key} at a folder written by save_pretrained"
    if a.state == "no-folder":
        return (f"{key} {a.ref!r} is a path that does not exist ({a.detail}), and not a hub id; fix the path")
    where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
    why = a.detail or "the hub cannot be reached"
    return (f"{key} {a.ref!r} is not in {where} and the hub cannot be asked ({why}): a run here stops at "
            f"model load; download it where the hub answers (`hf download {a.ref}`, with HF_TOKEN for a gated "
            f"model){_other_way(a.ref)}")


def _needs_own_code(loaded: LoadedConfig, cfg: Mapping[str, Any], key: str, a: hub.Answer) -> Finding | None:
    """A loadable config.json whose model only exists in its own code, without trust_remote_code."""
    raw = _config(a)
    if not raw or cfg.get("trust_remote_code") or not raw.get("auto_map"):
        return None
    model_type = raw.get("model_type")
    from transformers import CONFIG_MAPPING

    if model_type in CONFIG_MAPPING:
        return None  # transformers has the architecture itself and ignores the auto_map
    files = ", ".join(_code_files(a, raw))
    return Finding(str(loaded.path), loaded.line(key), "model-unavailable",
                   f"{key} {a.ref!r} is a model_type transformers does not know ({model_type!r}): it exists only in "
                   f"its own code ({files}), which runs only with trust_remote_code: true; read that code, then set "
                   f"trust_remote_code: true, or pick a model transformers supports")


def remote_code(loaded: LoadedConfig, cfg: Mapping[str, Any]) -> list[Finding]:
    """`trust_remote_code: true`: the Python the model's config.json names (auto_map), which the run imports."""
    if not cfg.get("trust_remote_code"):
        return []
    ref = cfg.get("base_model")
    if not isinstance(ref, str) or not ref or models.is_builtin(ref):
        return []
    a = hub.ask(ref, cfg.get("revision_of_model"))
    shipped = models.shipped_name(ref)
    raw = _config(a) or hub.config_json(ref) or (models.architecture_config(shipped) if shipped else None)
    line = loaded.line("trust_remote_code")
    if raw is None:
        return [Finding(str(loaded.path), line, "code-will-run",
                        f"trust_remote_code: true lets the run import any Python that {ref!r} ships (its config.json's "
                        f"auto_map), and its config.json cannot be read here to name it; read the repository's "
                        f"*.py files before you run it", "warning")]
    if not raw.get("auto_map"):
        return [Finding(str(loaded.path), line, "code-will-run",
                        f"trust_remote_code: true, though {ref!r} ships no code of its own (no auto_map in its "
                        f"config.json): transformers uses its own {raw.get('model_type')!r} classes; remove it so a "
                        f"later model with code cannot run it unread", "warning")]
    return [Finding(str(loaded.path), line, "code-will-run",
                    f"trust_remote_code: true: the run imports and runs the model's own Python, "
                    f"{', '.join(_code_files(a, raw))} (config.json auto_map); read it before you run it", "warning")]


def _config(a: hub.Answer) -> dict[str, Any] | None:
    return None if a.config is None else hub.read_config(a.config)


def _code_files(a: hub.Answer, raw: Mapping[str, Any]) -> list[str]:
    """The .py files an auto_map names: beside the config where they are, else in the hub repository."""
    names = set()
    for target in (raw.get("auto_map") or {}).values():
        for ref in target if isinstance(target, list) else [target]:
            if isinstance(ref, str) and ref:
                module = ref.split("--")[-1].rsplit(".", 1)[0]  # "repo--modeling_x.Class" names another repo
                names.add(f"{module.replace('.', '/')}.py")
    folder = a.config.parent if a.config is not None else None
    shown = []
    for name in sorted(names):
        path = folder / name if folder is not None else None
        if path is not None and path.is_file():
            shown.append(_shown(path))
        else:
            shown.append(f"{name} (named, not in the folder)" if a.state == "local" else f"{name} (in {a.ref} on the hub)")
    return shown


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
