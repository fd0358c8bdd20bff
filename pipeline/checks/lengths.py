"""Token lengths of the data sets `pipeline.checks.data` read, with the config's own tokenizer and template.

Rows longer than `sequence_len` are reported (`data-too-long`: axolotl drops them by default, or truncates
them). A hub tokenizer that is not in the local cache cannot be loaded offline: that is said
(`tokenizer-unavailable`) and the length check is skipped. The rows still get an upper bound: the UTF-8
bytes of the rendered chat (a byte-level BPE token, as in Llama 3, covers at least one byte; two more per
row cover a SentencePiece prefix space), which bounds the steps a packed run can have.

Split out of data.py (reading and row checks there, lengths here) so each module stays one subject;
`checks.inspect` runs data's check, then this one on the sets it returned.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pipeline.checks.dataset import DataSet
from pipeline.checks.rows import messages, setting
from pipeline.core import safeio
from pipeline.core.config import LoadedConfig
from pipeline.core.errors import Finding

T = TypeVar("T")


def check(loaded: LoadedConfig, cfg: Mapping[str, Any], sets: list[DataSet]) -> list[Finding]:
    """Measure the chat and completion sets (token lengths, else byte bounds); findings for the long ones."""
    found: list[Finding] = []
    measurable = [d for d in sets if d.type in ("chat_template", "completion") and not cfg.get("rl")]
    if not measurable:
        return found
    tokenizer, source = tokenizer_for(cfg)
    if tokenizer is None and source:
        found.append(Finding(str(loaded.path), loaded.line("tokenizer_config") or loaded.line("base_model"),
                             "tokenizer-unavailable",
                             f"{source}, so token lengths against sequence_len are not checked; run the check "
                             f"where the tokenizer is cached to have them checked"))
    for ds in measurable:
        unrendered: list[Finding] = []
        if tokenizer is None:
            ds.bounds = byte_bounds(ds, cfg, unrendered)
        else:
            try:
                ds.lengths = token_lengths(ds, cfg, tokenizer, unrendered)
            except Exception as exc:  # noqa: BLE001 - a model folder's tokenizer may fail in any way on use
                found.append(Finding(str(loaded.path), loaded.line("tokenizer_config") or loaded.line("base_model"),
                                     "tokenizer-unavailable",
                                     f"{source}: its tokenizer loads but fails on the rows ({type(exc).__name__}), so "
                                     f"token lengths against sequence_len are not checked; repair its tokenizer files"))
                continue
            found += too_long(ds, cfg, loaded)
        found += unrendered[:SHOWN] + ([Finding(ds.shown, None, "data-row", f"{len(unrendered) - SHOWN} more rows "
                                                                            f"like the above")]
                                       if len(unrendered) > SHOWN else [])
    return found


#: rows the chat template cannot render, shown per data set (the rest are counted)
SHOWN = 5


def tokenizer_for(cfg: Mapping[str, Any]) -> tuple[Any | None, str]:
    """(tokenizer, where it came from) or (None, why it could not be loaded offline).

    pipeline's own tokenizer is a plain fast tokenizer, loaded as that class: transformers' Auto classes
    import its whole modeling stack (seconds), which only a hub tokenizer found in the local cache needs."""
    from pipeline.core import models

    ref = str(cfg.get("tokenizer_config") or cfg.get("base_model") or "")
    if not ref:
        return None, "the config names no base_model"
    if models.is_builtin(ref):
        from transformers import PreTrainedTokenizerFast

        try:
            folder = models.resolve(ref, build=False)
        except KeyError:
            return None, ""  # no such model: the rules report that (model-unknown)
        if (folder / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast.from_pretrained(str(folder)), str(folder)
        if ref[len(models.SCHEME):].strip("/") in models.WHEEL_MODELS:
            return None, f"{ref} is not built yet (`pipeline build-model {ref}`)"
        # the model is not built yet: its tokenizer is deterministic, build only that (no weights)
        with tempfile.TemporaryDirectory(prefix="pipeline-tokenizer-") as tmp:
            return models.build_tokenizer(Path(tmp)), f"{ref} (tokenizer built for the check)"
    if not safeio.present(ref, "dir"):
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(ref, "tokenizer_config.json")
        except ValueError:  # not even a hub id (HFValidationError): `/dev/zero`, `a b`
            cached = None
        if not isinstance(cached, str):
            return None, f"tokenizer {ref!r} is not a local folder nor in the local Hugging Face cache"
    try:
        from transformers import AutoTokenizer

        # never the repository's own code: the check runs none (and transformers would ask on the terminal)
        return AutoTokenizer.from_pretrained(ref, local_files_only=True, trust_remote_code=False), ref
    except Exception as exc:  # noqa: BLE001 - any failure means: not available offline
        return None, f"tokenizer {ref!r} does not load offline ({type(exc).__name__})"


def chat_template_for(cfg: Mapping[str, Any], entry: Mapping[str, Any], tokenizer: Any) -> str | None:
    """The template axolotl renders this entry with: the entry's own, else the config's, else the
    tokenizer's (axolotl writes the config's template into the tokenizer, see loaders/tokenizer.py)."""
    from axolotl.utils.chat_templates import get_chat_template

    choice, jinja = entry.get("chat_template"), entry.get("chat_template_jinja")
    if not choice or str(choice) == "tokenizer_default":
        choice, jinja = cfg.get("chat_template"), cfg.get("chat_template_jinja")
    if not choice:
        return getattr(tokenizer, "chat_template", None)
    try:
        return str(get_chat_template(str(choice), jinja_template=jinja, tokenizer=tokenizer))
    except (ValueError, AttributeError):  # tokenizer_default with no tokenizer at hand
        return None


#: rows rendered and tokenised at a time: the tokenizer's batch, and all that is held of the rows
BATCH = 1024


def token_lengths(ds: DataSet, cfg: Mapping[str, Any], tokenizer: Any,
                  found: list[Finding] | None = None) -> array[int] | None:
    """Tokens of every row as axolotl renders it, in file order, streamed in batches of BATCH rows; a row
    the chat template cannot render counts 0 and is a finding in `found`."""
    if ds.type == "chat_template":
        template = chat_template_for(cfg, ds.entry, tokenizer)
        if template is None:
            return None
        out = array("I")
        for texts in batched(rendered(ds, found, lambda msgs: tokenizer.apply_chat_template(
                msgs, chat_template=template, tokenize=False))):
            out.extend(len(ids) for ids in tokenizer([t or "" for t in texts], add_special_tokens=False)["input_ids"])
        return out
    if ds.type == "completion":
        key = setting(ds.entry, "field", "text")
        out = array("I")
        for rows in batched(row for _, row in ds.rows(doing="measuring token lengths of")):
            texts = [str(row.get(key, "")) if isinstance(row, dict) else "" for row in rows]
            out.extend(len(ids) + 1 for ids in tokenizer(texts)["input_ids"])  # + the EOS axolotl appends
        return out
    return None


def batched(items: Iterable[T]) -> Iterator[list[T]]:
    """`items` in lists of BATCH."""
    it = iter(items)
    while chunk := list(itertools.islice(it, BATCH)):
        yield chunk


def byte_bounds(ds: DataSet, cfg: Mapping[str, Any], found: list[Finding] | None = None) -> array[int] | None:
    """Bytes of each rendered chat row (+2), an upper bound of its tokens, without the tokenizer."""
    if ds.type != "chat_template":
        return None
    from transformers.utils.chat_template_utils import render_jinja_template

    template = chat_template_for(cfg, ds.entry, None)
    if template is None:
        return None
    # special tokens are one token each whatever their spelling: any non-empty stand-in keeps the bound;
    # it returns (texts, generation indices), whatever its annotation says
    texts = rendered(ds, found, lambda msgs: render_jinja_template([msgs], chat_template=template, bos_token="<s>",
                                                                   eos_token="</s>")[0][0])
    return array("I", (0 if t is None else len(t.encode("utf-8")) + 2 for t in texts))


def rendered(ds: DataSet, found: list[Finding] | None,
             render: Callable[[list[dict[str, Any]]], str]) -> Iterator[str | None]:
    """Each row's text through `render`, streamed, None where it has no text messages or the template refuses
    it: that row is a `data-row` finding in `found`, at its line (axolotl would stop on it while tokenising)."""
    for line, row in ds.rows(doing="measuring token lengths of"):
        msgs = [m for m in messages(ds, row) or [] if isinstance(m["content"], str)]
        try:
            yield render(msgs) if msgs else None
        except Exception as exc:  # noqa: BLE001 - a chat template is the user's own code: any error is the row's
            yield None
            if found is not None:
                found.append(Finding(ds.shown, line or None, "data-row",
                                     f"the chat template cannot render this row ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:200]}); fix the row or the template"))


def too_long(ds: DataSet, cfg: Mapping[str, Any], loaded: LoadedConfig) -> list[Finding]:
    seq = cfg.get("sequence_len") or 2048
    if not ds.lengths or not isinstance(seq, (int, float)) or not math.isfinite(seq):
        return []  # axolotl's validation reports a sequence_len that is no number
    seq = int(seq)
    over = (line for n, line in zip(ds.lengths, ds.lines) if n > seq)  # noqa: B905 - a file edited meanwhile
    long_lines = list(itertools.islice(over, 6))
    if not long_lines:
        return []
    many = len(long_lines) + sum(1 for _ in over)
    strategy = str(cfg.get("excess_length_strategy") or "drop")
    fate = {"drop": "axolotl drops them", "truncate": "axolotl truncates them",
            "raise": "axolotl stops with an error"}.get(strategy, "axolotl drops them")
    shown = ", ".join(map(str, long_lines[:5])) + (" ..." if many > 5 else "")
    return [Finding(str(loaded.path), loaded.line("sequence_len") or loaded.line(ds.key, ds.index),
                    "data-too-long",
                    f"{many} of {ds.count} rows of {ds.shown} are longer than sequence_len {seq} "
                    f"tokens (longest {max(ds.lengths)}; lines {shown}): {fate}; raise sequence_len or shorten "
                    f"those rows")]
