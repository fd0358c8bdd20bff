"""The model's shape (its config.json): shipped here, a local folder, the Hugging Face cache, or the hub
(asked once, the answer kept in $PIPELINE_CACHE/hub/)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.checks import hub
from pipeline.core import models, safeio
from pipeline.core.config import LoadedConfig
from pipeline.core.errors import Finding


def architecture(loaded: LoadedConfig, cfg: Mapping[str, Any]) -> tuple[dict[str, Any] | None, Finding | None]:
    """The model's config.json, from what ships here, a local folder, the Hugging Face cache or the hub."""
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
    if safeio.present(Path(ref) / "config.json", "file"):
        if (raw := hub.read_config(Path(ref) / "config.json")) is not None:
            return raw, None
        return None, Finding(str(loaded.path), line, "architecture-unknown",
                             f"{ref!r} has a config.json that is not a JSON object (damaged, or not a model's): "
                             f"parameter counts, the memory estimate and the context-length check are skipped",
                             "warning")
    if (found := hub.config_json(ref, cfg.get("revision_of_model"))) is not None:
        return found, None
    return None, Finding(str(loaded.path), line, "architecture-unknown",
                         f"{ref!r} has no config.json here (not shipped in pipeline/architectures, not a local "
                         f"folder, not in the Hugging Face cache, and the hub was not reached): parameter counts, the "
                         f"memory estimate and the context-length check are skipped; run the check once where the "
                         f"hub answers (it keeps the config.json), or add it to pipeline/architectures/", "warning")
