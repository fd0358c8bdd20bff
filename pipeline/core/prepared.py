"""Prepared (tokenised) data keyed by content: the folder name axolotl prepares into, and the cleaning of
what an axolotl killed while saving left there.

Axolotl keys its prepared data by dataset settings and the tokenizer's name, never by file content, so an edited
file would train its old rows. `prepared_key` names one folder per content key, under which axolotl keeps its
own per-split folders; identical data still shares its prepared rows between runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core import safeio

#: top-level settings that change what axolotl's data preparation produces (axolotl's own hash fields,
#: utils/data/shared.py, and the few beyond them that decide which rows are kept)
PREPARED_SETTINGS = (
    "sequence_len", "sample_packing", "eval_sample_packing", "group_by_length", "kd_temperature",
    "dataset_exact_deduplication", "added_tokens_overrides", "chat_template", "chat_template_jinja",
    "chat_template_kwargs", "default_system_message", "eot_tokens", "sample_packing_bin_size",
    "sample_packing_group_size", "sample_packing_sequentially", "special_tokens", "train_on_inputs",
    "val_set_size", "seed", "excess_length_strategy", "min_sample_len", "tokens", "tokenizer_type",
    "tokenizer_config", "base_model", "base_model_config", "dataset_shard_num", "dataset_shard_idx",
    "skip_prepare_dataset", "is_preprocess",
)
#: files of a tokenizer folder whose bytes decide how text becomes tokens
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")


def prepared_key(cfg: Mapping[str, Any], data_hashes: Mapping[str, str]) -> str:
    """The prepared-data folder's name: every data file's sha256, the dataset entries and the settings
    axolotl keys on, and the tokenizer's own files (a local tokenizer rebuilt under the same path counts)."""
    import hashlib
    import json

    tokenizer = str(cfg.get("tokenizer_config") or cfg.get("base_model") or "")
    tokenizer_files: dict[str, str] = {}
    if tokenizer and Path(tokenizer).is_dir():
        for name in TOKENIZER_FILES:
            f = Path(tokenizer) / name
            if os.path.lexists(f):  # bounded: a FIFO or /dev/zero under a tokenizer's name is one line
                try:
                    tokenizer_files[name] = safeio.sha256(f, "model", safeio.data_bytes(), what=name)
                except safeio.BadFile as exc:
                    raise exc.user_error(f) from None
    payload = {
        "data": dict(sorted(data_hashes.items())),
        "datasets": [cfg.get("datasets"), cfg.get("test_datasets")],
        "settings": {k: cfg.get(k) for k in PREPARED_SETTINGS},
        "tokenizer": {"ref": tokenizer, "revision": cfg.get("revision_of_model"), "files": tokenizer_files},
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


#: axolotl's lock over a prepared-data folder while it prepares into it (utils/data/lock.py, a filelock)
PREPARE_LOCK = "datasets_prep.lock"


def drop_incomplete_prepared(folder: Path) -> list[Path]:
    """Remove what an axolotl that died while saving prepared data (a full disk, a kill) left in `folder`,
    one content key's folder: each split the `datasets` library writes as arrow files, then state.json and
    dataset_info.json last, so a split without both whole is cut short, and the next axolotl would fail
    to load it for ever. Nothing is touched while another axolotl holds the folder's lock (it is preparing
    now) or where the folder cannot be written. Returns what was removed."""
    import fcntl
    import re
    import shutil

    hashed = re.compile(r"[0-9a-f]{32}")  # prepared_key's names, and axolotl's for each split: nothing else
    if not hashed.fullmatch(folder.name):
        return []
    try:
        fd = os.open(folder / PREPARE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:  # no such folder yet, or one that cannot be written: nothing this run could clean
        return []
    gone = []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for split in sorted(p for p in folder.iterdir() if p.is_dir() and hashed.fullmatch(p.name)):
            try:
                whole = all(isinstance(safeio.read_json(split / name, follow=False), dict)
                            for name in ("state.json", "dataset_info.json"))
            except (safeio.BadFile, OSError, ValueError):
                whole = (split / "dataset_dict.json").is_file()
            if not whole:
                shutil.rmtree(split, ignore_errors=True)
                gone.append(split)
    except OSError:  # held by a preparing axolotl (BlockingIOError), or the folder vanished
        pass
    finally:
        os.close(fd)
    return gone
