"""The model's shape (its config.json), found offline: shipped here, a local folder, or the local cache."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core import models
from pipeline.core.config import LoadedConfig
from pipeline.core.errors import Finding


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
