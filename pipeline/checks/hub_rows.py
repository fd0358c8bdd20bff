"""How many rows a hub dataset's split holds, from the dataset card the Hugging Face hub keeps for it.

A `datasets:` entry that is not a local file names a dataset on the hub, whose rows are not read here. The hub's
answer about the repository (`HfApi.dataset_info`, the real `huggingface_hub` client, so HF_ENDPOINT, HF_TOKEN
and HF_HUB_OFFLINE mean what they mean to axolotl) carries the card's `dataset_info`: per config, each split's
`num_examples`, as `datasets` wrote them when the data was pushed. That count is what axolotl loads before it
drops anything (rows too long, rows without a trained turn), so it bounds the rows a run trains on from above:
enough to tell that one optimizer step wants more sequences than the data has (`batch-larger-than-dataset`).

Asked once per process for the same entry and hub settings, waiting at most `hub.TIMEOUT_S`. Nothing fails here:
an entry the card cannot answer for says why (`Rows.state`), and the check says it was not counted.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.checks import hub


@dataclass(frozen=True)
class Rows:
    """What the hub says of one entry's rows: `state` is one of

    counted      the card gives the split's rows (`rows`; with `shards`, one shard's)
    offline      HF_HUB_OFFLINE is set: not asked
    unreachable  the hub did not answer (no network, 5xx)
    not-found    no such dataset (or revision) the token can see, or a gated one
    no-count     the hub answered, but its card lists no rows for this config and split, or the entry takes
                 a part the card cannot tell (`data_files`, a split slice such as `train[:10%]`, several names)
    """

    path: str
    split: str
    state: str
    rows: int | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def described(self) -> str:
        """One phrase: `tatsu-lab/alpaca train: 52,002 rows on the hub's dataset card`, or why not counted."""
        if self.rows is not None:
            part = f", {self.detail}" if self.detail else ""
            return f"{self.path} {self.split}: {self.rows:,} rows on the hub's dataset card{part}"
        return f"{self.path} {self.split}: rows not counted ({self.detail})"


def is_hub_id(path: str) -> bool:
    """A path the hub could hold as a dataset: `name` or `org/name`, no scheme, no folder."""
    return "://" not in path and path.count("/") <= 1 and not hub.looks_local(path)


def count(entry: Mapping[str, Any]) -> Rows:
    """The rows of the split one `datasets:` entry loads, as the hub's dataset card gives them (see Rows)."""
    from huggingface_hub import constants

    path, name = str(entry.get("path") or ""), entry.get("name")
    split = str(entry.get("split") or "train")  # axolotl takes `train` where no split is named
    if entry.get("data_files") or "[" in split or isinstance(name, list):
        return Rows(path, split, "no-count", detail="the entry takes a part of the dataset its card does not count "
                                                    "(data_files, a split slice or several names)")
    revision = entry.get("revision")
    answer = _ask(path, None if name is None else str(name), split, None if revision is None else str(revision),
                  constants.ENDPOINT, bool(constants.HF_HUB_OFFLINE), hub.token_set())
    shards = entry.get("shards")
    if answer.rows is not None and isinstance(shards, int) and shards > 1:  # axolotl keeps one shard of the split
        return Rows(path, split, "counted", math.ceil(answer.rows / shards), f"one of {shards} shards")
    return answer


@functools.lru_cache(maxsize=64)
def _ask(path: str, name: str | None, split: str, revision: str | None, endpoint: str, offline: bool,
         token: bool) -> Rows:
    if offline:
        return Rows(path, split, "offline", detail="HF_HUB_OFFLINE is set")
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    try:
        info = HfApi(endpoint=endpoint).dataset_info(path, revision=revision, timeout=hub.TIMEOUT_S)
    except GatedRepoError:
        return Rows(path, split, "not-found", detail="the dataset is gated and HF_TOKEN has no access")
    except (RepositoryNotFoundError, HFValidationError):  # RevisionNotFoundError is a RepositoryNotFoundError
        return Rows(path, split, "not-found", detail=f"the hub has no dataset {path!r}"
                                                     + (f" at revision {revision!r}" if revision else ""))
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        return Rows(path, split, "unreachable", detail=f"{endpoint} answered HTTP {status}")
    except (httpx.HTTPError, OSError) as exc:
        return Rows(path, split, "unreachable", detail=f"no answer from {endpoint} ({type(exc).__name__})")
    card = info.card_data.get("dataset_info") if info.card_data is not None else None
    rows = split_rows(card, name, split)
    if rows is None:
        return Rows(path, split, "no-count", detail=f"its dataset card gives no row count for split {split!r}"
                                                    + (f" of config {name!r}" if name else ""))
    return Rows(path, split, "counted", rows)


def split_rows(card: Any, name: str | None, split: str) -> int | None:
    """`num_examples` of `split` in a card's `dataset_info`: one mapping, or a list with a `config_name` each (no
    name: the `default` config, or the only one)."""
    configs = [c for c in (card if isinstance(card, list) else [card]) if isinstance(c, Mapping)]
    if name is not None:
        configs = [c for c in configs if c.get("config_name") == name]
    elif len(configs) > 1:
        configs = [c for c in configs if c.get("config_name", "default") == "default"]
    if len(configs) != 1:
        return None
    found = [s.get("num_examples") for s in configs[0].get("splits") or [] if isinstance(s, Mapping)
             and s.get("name") == split]
    return found[0] if len(found) == 1 and isinstance(found[0], int) and found[0] >= 0 else None


def for_config(cfg: Mapping[str, Any]) -> list[Rows]:
    """The hub's row counts of every training entry (`datasets:`) that names a hub dataset, in order."""
    from pipeline.core import config

    return [count(entry) for key, _, entry in config.dataset_entries(cfg)
            if key == "datasets" and entry.get("path") and not config.is_local_dataset(entry)
            and is_hub_id(str(entry["path"]))]
