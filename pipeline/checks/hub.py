"""Whether a run can load its base model, and the model's config.json, asked of the Hugging Face hub once.

A config names its base model by a local folder or a hub id. Before any run starts the check knows
which of these holds, in seconds:

- a local folder: it must hold a config.json and weights (`*.safetensors`, `pytorch_model*.bin`);
- a hub id whose config and weights are in the local Hugging Face cache: loadable with no network;
- otherwise the hub is asked for the model's config.json (one HEAD, then the file: a few KB), with the
  real `huggingface_hub` client, so HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE mean what they mean to
  axolotl: 404 (not on the hub), 401/403 with `GatedRepo` (a licence to accept, a token to set), no answer
  (offline, no network) are told apart. The config.json it returns is kept in
  `$PIPELINE_CACHE/hub/` (the hub's own cache layout, apart from the user's Hugging Face cache, which
  keeps meaning "downloaded"), so the shape of any hub model is known to the checks from then on.

Answers are kept for the process (a check of ten configs on one model asks once).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import safeio
from pipeline.core.cache import cache_dir

#: seconds to wait for the hub: long enough for a slow link, short enough that a machine with no route
#: to the hub is told so in seconds
TIMEOUT_S = 3.0
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class Answer:
    """What is known about loading a model: `state` is one of

    local          a local folder with config.json and weights
    cached         a hub model whose config and weights are in the Hugging Face cache
    on-hub         the hub answered with its config.json (the run will download the weights)
    offline        not cached, and HF_HUB_OFFLINE forbids asking
    unreachable    not cached, and the hub did not answer
    not-found      the hub has no such model (or revision), or it is private and the token cannot see it
    gated          the hub says the model is gated and the request had no token, or one without access
    incomplete     a local folder without config.json or weights, or a hub repo without config.json
    no-folder      a local path that does not exist
    """

    state: str
    ref: str
    detail: str = ""
    config: Path | None = None

    @property
    def loadable(self) -> bool:
        return self.state in ("local", "cached", "on-hub")


def ask(ref: str, revision: str | None = None) -> Answer:
    """What loading `ref` would meet (see Answer); asked once per process for the same hub settings."""
    from huggingface_hub import constants

    return _ask(ref, revision, constants.ENDPOINT, bool(constants.HF_HUB_OFFLINE), token_set(),
                str(_cache()), str(constants.HF_HUB_CACHE))


def config_json(ref: str, revision: str | None = None) -> dict | None:
    """The model's config.json where it is known without asking anew: a local folder, the Hugging Face
    cache, or what the hub answered (fetched now, or kept from an earlier answer)."""
    answer = ask(ref, revision)
    path = answer.config or _cached_config(ref, revision, None) or _cached_config(ref, revision, _cache())
    return None if path is None else read_config(path)


def read_config(path: Path) -> dict[str, Any] | None:
    """A config.json as a dict, or None where it is not a readable JSON object (not UTF-8, not JSON, a list)."""
    try:
        data = safeio.read_json(path, what=path.name)
    except (safeio.BadFile, OSError):
        return None
    return data if isinstance(data, dict) else None


def _expanded(ref: str) -> Path:
    """`ref` as a path, `~` expanded where this machine knows the user."""
    try:
        return Path(ref).expanduser()
    except RuntimeError:  # ~name of a user this machine does not have
        return Path(ref)


def looks_local(ref: str) -> bool:
    """A reference that can only mean a folder: a hub id is `name` or `org/name`."""
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or "\\" in ref or safeio.present(_expanded(ref), "dir")


def token_set() -> bool:
    """Whether a token is set in the environment (huggingface_hub reads HF_TOKEN itself)."""
    return bool(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))


def _cache() -> Path:
    return cache_dir() / "hub"


@functools.lru_cache(maxsize=64)
def _ask(ref: str, revision: str | None, endpoint: str, offline: bool, token: bool, cache: str,
         hf_cache: str) -> Answer:
    folder = _expanded(ref)
    if safeio.present(folder, "dir"):
        return _local(ref, folder)
    if looks_local(ref):
        return Answer("no-folder", ref, f"{folder} does not exist")
    cached = _in_hf_cache(ref, revision)
    if cached is not None:
        return Answer("cached", ref, config=cached)
    if offline:
        return Answer("offline", ref, "HF_HUB_OFFLINE is set")
    return _from_hub(ref, revision, Path(cache), endpoint)


def _local(ref: str, folder: Path) -> Answer:
    if not (folder / "config.json").is_file():
        return Answer("incomplete", ref, f"{folder} has no config.json")
    if read_config(folder / "config.json") is None:
        return Answer("incomplete", ref, f"{folder / 'config.json'} is not a JSON object transformers can read")
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin")) or \
        any(folder.glob("*.gguf"))
    if not has_weights:
        return Answer("incomplete", ref, f"{folder} has a config.json but no weights (*.safetensors, "
                                         f"pytorch_model*.bin)", folder / "config.json")
    return Answer("local", ref, config=folder / "config.json")


def _in_hf_cache(ref: str, revision: str | None) -> Path | None:
    """config.json from the Hugging Face cache when the weights are there too (every shard of an index)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> Path | None:
        try:
            found = try_to_load_from_cache(ref, name, revision=revision)
        except Exception:  # noqa: BLE001 - an id the cache cannot hold (bad characters): not cached
            return None
        return Path(found) if isinstance(found, str) else None

    config = cached("config.json")
    if config is None:
        return None
    for name in WEIGHTS:
        weights = cached(name)
        if weights is None:
            continue
        if not name.endswith(".index.json"):
            return config
        try:
            shards = set(safeio.json_loads(weights.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            continue
        if all(cached(s) is not None for s in shards):
            return config
    return None


def _from_hub(ref: str, revision: str | None, cache: Path, endpoint: str) -> Answer:
    import httpx
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        get_hf_file_metadata(hf_hub_url(ref, "config.json", revision=revision), timeout=TIMEOUT_S)
        path = hf_hub_download(ref, "config.json", revision=revision, cache_dir=cache, etag_timeout=TIMEOUT_S)
    except GatedRepoError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        return Answer("gated", ref, f"HTTP {status}")  # 401: no token sent; 403: a token without access
    except RevisionNotFoundError:
        return Answer("not-found", ref, f"revision {revision!r} does not exist")
    except RepositoryNotFoundError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        return Answer("not-found", ref, f"HTTP {status}")
    except EntryNotFoundError:
        return Answer("incomplete", ref, "the repository has no config.json (not a transformers model)")
    except HFValidationError as exc:
        return Answer("no-folder", ref, str(exc).splitlines()[0])
    except HfHubHTTPError as exc:  # 5xx, 429: the hub is there but does not answer this
        status = exc.response.status_code if exc.response is not None else 0
        return Answer("unreachable", ref, f"{endpoint} answered HTTP {status}")
    except (httpx.HTTPError, LocalEntryNotFoundError, OSError) as exc:
        return Answer("unreachable", ref, f"no answer from {endpoint} ({type(exc).__name__})")
    return Answer("on-hub", ref, config=Path(path))


def _cached_config(ref: str, revision: str | None, cache: Path | None) -> Path | None:
    """config.json from a cache alone (the Hugging Face cache, or with `cache` the answers kept here)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(ref, "config.json", cache_dir=cache, revision=revision)
    except Exception:  # noqa: BLE001 - not an id the cache can hold
        return None
    return Path(found) if isinstance(found, str) else None
