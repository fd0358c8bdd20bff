"""What training, merging and the adapter leave on disk, checked before anything loads it: safetensors
files, torch checkpoint files, an adapter's config and a merged model folder.

Each check reads headers only (a safetensors header, a zip's central directory), through the bounded
reader, so a file cut short by a full disk or a killed copy, a FIFO or /dev/zero in its place is a one-line
reason, never a hang, a traceback inside torch or a load of gigabytes. They answer `str | None`: what is
wrong, in words for the user, or None when the file looks whole.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Any

from pipeline.core.safeio.files import BadFile, MiB, check_regular, open_regular
from pipeline.core.safeio.structured import json_loads, read_json

#: no model file of any size ends here; the check reads headers only
ANY_SIZE = 2**50
#: the files torch.save writes into a Trainer checkpoint (a zip archive each, since torch 1.6)
TORCH_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "adapter_model.bin",
               "pytorch_model.bin")
#: weights a checkpoint or a merged folder may hold, one of which it must
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
           "pytorch_model.bin")


def safetensors_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with a .safetensors file (truncated, not safetensors), or None when it is whole.

    The format is an 8-byte header length, a JSON header naming every tensor's byte range, then the data:
    a file cut short by a full disk or a killed copy ends before the last range does.
    """
    p = Path(path)
    try:
        st = check_regular(p, "model", ANY_SIZE, what=p.name, follow=False)
        with open_regular(p, "model", ANY_SIZE, what=p.name, follow=False) as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{p.name} is {st.st_size} bytes, too short to be a safetensors file"
            n = int.from_bytes(head, "little")
            if n > min(st.st_size - 8, 100 * MiB):
                return f"{p.name} has a header length of {n} bytes in a {st.st_size}-byte file: truncated or not safetensors"
            header = json_loads(fh.read(n))
    except BadFile as exc:
        return exc.message
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{p.name} has no readable safetensors header ({type(exc).__name__})"
    if not isinstance(header, dict):
        return f"{p.name} has no readable safetensors header"
    ends: list[int] = []
    for k, v in header.items():
        offsets = v.get("data_offsets") if isinstance(v, dict) else None
        if k == "__metadata__":
            continue
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)):
            return f"{p.name} has a tensor {str(k)[:40]!r} without its [start, end] byte offsets: not safetensors"
        ends.append(offsets[1])
    need = 8 + n + max(ends, default=0)
    if st.st_size < need:
        return f"{p.name} is {st.st_size} bytes but its header needs {need}: the file was cut short"
    return None


def torch_file_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with a file torch.save wrote (optimizer.pt, rng_state.pth, ...), or None.

    torch.save writes a zip archive whose central directory sits at the end: a file cut short loses it,
    and every member must lie inside the file. The members are not decompressed or unpickled (that is
    torch's to do, and only for a checkpoint that passed)."""
    p = Path(path)
    try:
        st = check_regular(p, "model", ANY_SIZE, what=p.name, follow=False)
        with open_regular(p, "model", ANY_SIZE, what=p.name, follow=False) as fh, zipfile.ZipFile(fh) as archive:
            members = archive.infolist()
    except BadFile as exc:
        return exc.message
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError) as exc:
        return f"{p.name} is not a whole torch file ({str(exc)[:80] or type(exc).__name__}): cut short or damaged"
    if not members:
        return f"{p.name} is an empty archive, not a torch file"
    for info in members:
        if info.header_offset + 30 + len(info.filename.encode()) + info.compress_size > st.st_size:
            return f"{p.name} ends inside its member {info.filename[:60]!r}: the file was cut short"
    return None


def checkpoint_problem(folder: str | os.PathLike[str], step: int) -> str | None:
    """What makes a Trainer checkpoint folder unfit to resume from, or None when it is complete.

    The trainer writes trainer_state.json last: it must parse and name `step`; beside it, weights must be
    present and whole (every .safetensors to its last byte), and so must every torch file
    (optimizer, scheduler, RNG state, training arguments)."""
    p = Path(folder)
    try:
        state = read_json(p / "trainer_state.json", what="trainer_state.json", follow=False)
    except BadFile as exc:
        return exc.message
    if not isinstance(state, dict) or state.get("global_step") != step:
        return f"trainer_state.json does not name step {step}"
    weights = [p / n for n in WEIGHTS if os.path.lexists(p / n)]
    if not weights:
        return "it holds no weights"
    for f in [*weights, *(p / n for n in TORCH_FILES if os.path.lexists(p / n) and p / n not in weights)]:
        why = safetensors_problem(f) if f.suffix == ".safetensors" else \
            torch_file_problem(f) if f.name in TORCH_FILES else _json_problem(f)
        if why is not None:
            return why
    return None


def _json_problem(path: Path) -> str | None:
    try:
        data = read_json(path, what=path.name, max_bytes=64 * MiB, follow=False)
    except BadFile as exc:
        return exc.message
    return None if isinstance(data, dict) else f"{path.name} is not a JSON object"


#: adapter_config.json keys peft reads, and what each must be: a key of another type fails deep inside peft
_ADAPTER_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "peft_type": ((str,), "a string such as \"LORA\""),
    "r": ((int,), "a positive integer"),
    "lora_alpha": ((int, float), "a number"),
    "lora_dropout": ((int, float), "a number"),
    "target_modules": ((list, str, type(None)), "a list of module names"),
    "modules_to_save": ((list, type(None)), "a list of module names, or null"),
    "base_model_name_or_path": ((str, type(None)), "a string"),
    "task_type": ((str, type(None)), "a string such as \"CAUSAL_LM\""),
    "fan_in_fan_out": ((bool, type(None)), "true, false or null"),
    "use_dora": ((bool, type(None)), "true, false or null"),
    "use_rslora": ((bool, type(None)), "true, false or null"),
    "alpha_pattern": ((dict, type(None)), "an object"),
    "rank_pattern": ((dict, type(None)), "an object"),
    "bias": ((str,), "\"none\", \"all\" or \"lora_only\""),
}


def adapter_config_problem(config: Any) -> str | None:
    """What in a loaded adapter_config.json peft could not use, or None (types only: values are peft's)."""
    if not isinstance(config, dict):
        return "adapter_config.json is not a JSON object"
    for key, (kinds, meaning) in _ADAPTER_FIELDS.items():
        if key not in config:
            continue
        value = config[key]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            return f"adapter_config.json's {key} is {json_text(value)}, not {meaning}"
    if isinstance(config.get("r"), int) and not isinstance(config["r"], bool) and config["r"] < 1:
        return f"adapter_config.json's r is {config['r']}, not a positive integer"
    return None


def json_text(value: Any) -> str:
    """A value as short JSON-ish text for a message."""
    text = repr(value) if not isinstance(value, str) else '"' + value + '"'
    return text if len(text) <= 40 else text[:37] + "..."


def merged_problem(folder: str | os.PathLike[str]) -> str | None:
    """What is wrong with a merged model folder, or None when it is whole: its config.json must be a JSON
    object naming an architecture, and its weights present and whole (every shard an index names)."""
    p = Path(folder)
    try:
        meta = read_json(p / "config.json", what="merged/config.json", max_bytes=16 * MiB, follow=False)
    except BadFile as exc:
        return exc.message
    if not isinstance(meta, dict) or not isinstance(meta.get("model_type"), str):
        return "merged/config.json is not a model config (no model_type)"
    index = p / "model.safetensors.index.json"
    if os.path.lexists(index):
        try:
            data = read_json(index, what=index.name, max_bytes=64 * MiB, follow=False)
        except BadFile as exc:
            return exc.message
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            return f"{index.name} has no weight_map of shard names"
        shards = sorted({p / v for v in weight_map.values() if "/" not in v and v not in ("", ".", "..")})
        if len(shards) != len(set(weight_map.values())):
            return f"{index.name} names a shard outside the folder"
    else:
        shards = [f for f in (p / "model.safetensors", p / "pytorch_model.bin") if os.path.lexists(f)][:1]
    if not shards:
        return "merged/ holds no model weights"
    for shard in shards:
        why = safetensors_problem(shard) if shard.suffix == ".safetensors" else torch_file_problem(shard)
        if why is not None:
            return why
    return None
