"""Checks on the data a config names, before axolotl tokenises it minutes into a run.

For every entry of `datasets` and `test_datasets` that names a local file:

- the file exists (`data-missing`), has rows (`data-empty`) and every line is JSON (`data-json`, with the
  line number);
- rows match the declared `type`: for `chat_template` a list of messages (`data-row`) whose roles axolotl
  knows or the entry maps (`data-role`), with non-empty content (`data-empty-content`) and at least one
  turn that is trained (`data-no-trained-turn`); `completion` and `alpaca` rows have their fields; other
  types are said to be unchecked (`data-type-unchecked`);
- duplicates within a file (`data-duplicate`) and rows or prompts shared between training and test sets
  (`data-leakage`).

Token lengths against `sequence_len` (`data-too-long`, `tokenizer-unavailable`) are checked by
pipeline.checks.lengths on the data sets `check` returns: lengths imports this module, never the reverse.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.checks.dataset import Capped, DataSet
from pipeline.checks.rows import messages, prompt_key, row_check, row_key, setting
from pipeline.core import config as config_mod
from pipeline.core import safeio
from pipeline.core.config import LoadedConfig
from pipeline.core.errors import Finding

#: the names lengths and the tests read from here
__all__ = ["DataSet", "axolotl_format", "check", "load", "messages", "setting"]

# --- reading ------------------------------------------------------------------------------------------

def load(loaded: LoadedConfig, key: str, index: int, entry: dict[str, Any]) -> tuple[DataSet | None,
                                                                                       list[Finding]]:
    """Read one entry's file; findings for what cannot be read."""
    where, line = str(loaded.path), loaded.line(key, index, "path") or loaded.line(key, index)
    ds = DataSet(key, index, entry)
    if not entry.get("path"):
        return None, []  # axolotl's own validation reports a dataset without a path
    if not config_mod.is_local_dataset(entry):
        return None, [Finding(where, line, "data-not-local",
                              f"{ds.label}.path {entry['path']!r} is not a local file (a hub dataset?): its rows "
                              f"are not checked offline; use a local .jsonl file to have them checked")]
    ds.path = config_mod.find_data_file(str(entry["path"]), loaded.path)
    if ds.path is None:
        return None, [Finding(where, line, "data-missing",
                              f"{ds.label}.path {entry['path']!r} does not exist (looked in {Path.cwd()}, beside the "
                              f"config and one folder up); fix the path")]
    what = f"{ds.label}.path {entry['path']!r}"
    try:
        safeio.check_regular(ds.path, "data", safeio.data_bytes(), what=what)
    except safeio.BadFile as exc:
        return None, [exc.finding(where, line)]
    kind = axolotl_format(entry)
    if kind != "json":
        return None, [Finding(where, line, "data-type-unchecked",
                              f"{ds.label}: {ds.shown} is read as {kind}, not JSON; its rows are not checked "
                              f"(convert it to JSON lines to have them checked)")]
    return ds, []


def _after_reading(loaded: LoadedConfig, ds: DataSet, capped: Capped) -> list[Finding]:
    """What the whole file says once read: not JSON at all, or no rows; else its capped JSON findings."""
    where, line = str(loaded.path), loaded.line(ds.key, ds.index, "path") or loaded.line(ds.key, ds.index)
    assert ds.path is not None
    if not ds.count and capped.found and ds.path.suffix not in (".jsonl", ".json"):
        return [Finding(where, line, "data-format",
                        f"{ds.label}.path {ds.entry['path']!r}: {ds.shown} is not JSON (line {capped.found[0].line}), "
                        f"yet axolotl reads it as JSON (no .parquet/.arrow/.csv/.txt suffix, no ds_type); point it "
                        f"at a JSON-lines file")]
    found = capped.done()
    if not ds.count and not found:
        found.append(Finding(where, line, "data-empty", f"{ds.label}: {ds.shown} has no rows; point it at a file "
                                                        f"with data"))
    return found


#: axolotl's own table (utils/data/shared.py): a suffix found anywhere in the path, else JSON
AXOLOTL_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".txt": "text"}


def axolotl_format(entry: Mapping[str, Any]) -> str:
    """How axolotl loads a local file: `ds_type`, else by a suffix found anywhere in the path, else JSON."""
    if entry.get("ds_type"):
        return str(entry["ds_type"])
    path = str(entry.get("path", ""))
    return next((kind for suffix, kind in AXOLOTL_FORMATS.items() if suffix in path), "json")


def _digest(key: str) -> int:
    """64 bits of a row's or prompt's key: 2 million rows collide by chance with odds of about 1 in 10^7."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class Seen:
    """Digests of rows or prompts with where each was first seen (data set, line), in arrays of 16 bytes a
    row, matched by sorting once the files are read: duplicates and leakage without holding any row."""

    def __init__(self) -> None:
        self.digests, self.where = array("Q"), array("Q")

    def add(self, digest: int, set_no: int, line: int) -> None:
        self.digests.append(digest)
        self.where.append(set_no << 32 | line)

    def first(self) -> tuple[Any, Any]:
        """(sorted unique digests, where each was first seen)."""
        import numpy as np

        digests, where = np.frombuffer(self.digests, dtype=np.uint64), np.frombuffer(self.where, dtype=np.uint64)
        order = np.lexsort((where, digests))
        d, w = digests[order], where[order]
        keep = np.ones(len(d), dtype=bool)
        keep[1:] = d[1:] != d[:-1]
        return d[keep], w[keep]

    def repeats(self) -> list[tuple[int, int]]:
        """(line, line first seen) of every digest seen again, in line order (one data set's rows)."""
        import numpy as np

        digests, where = np.frombuffer(self.digests, dtype=np.uint64), np.frombuffer(self.where, dtype=np.uint64)
        order = np.lexsort((where, digests))
        d, w = digests[order], where[order] & 0xFFFFFFFF
        again = np.flatnonzero(d[1:] == d[:-1]) + 1
        starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        first = w[starts[np.searchsorted(starts, again, side="right") - 1]]
        return sorted(zip(w[again].tolist(), first.tolist(), strict=True))


def lookup(table: tuple[Any, Any], digest: int) -> int | None:
    """Where `digest` was first seen in a `Seen.first()` table, or None."""
    import numpy as np

    digests, where = table
    i = int(np.searchsorted(digests, np.uint64(digest)))
    return int(where[i]) if i < len(digests) and int(digests[i]) == digest else None


def check(loaded: LoadedConfig, cfg: Mapping[str, Any]) -> tuple[list[DataSet], list[Finding]]:
    """Every data check for one config but the token lengths (`lengths.check`, on the sets returned).

    Each file is streamed once: its rows are checked, and their digests kept (not the rows) for duplicates
    and leakage; memory grows by about 40 bytes a row, whatever the rows hold."""
    found: list[Finding] = []
    named: list[DataSet] = []  # every set read, by the number its digests carry
    train_rows, train_prompts = Seen(), Seen()
    tests: list[tuple[DataSet, Seen, Seen]] = []
    for key, i, entry in config_mod.dataset_entries(cfg):  # every `datasets` entry before any `test_datasets`
        ds, problems = load(loaded, key, i, entry)
        found += problems
        if ds is None:
            continue
        named.append(ds)
        check_row, unchecked = row_check(ds, cfg)
        json_errors, row_findings, own = Capped(), Capped(), Seen()
        rows, prompts = (train_rows, train_prompts) if key == "datasets" else (Seen(), Seen())
        try:
            for line, row in ds.rows(_json_errors(ds, json_errors)):
                ds.lines.append(line)
                if check_row is not None:
                    for rule, message in check_row(ds, row, cfg):
                        row_findings.add(Finding(ds.shown, line or None, rule, message))
                digest = _digest(row_key(row))
                own.add(digest, len(named) - 1, line)
                rows.add(digest, len(named) - 1, line)
                if (prompt := prompt_key(ds, row)) is not None:
                    prompts.add(_digest(prompt), len(named) - 1, line)
        except safeio.BadFile as exc:  # the file cannot be read to its end: none of it is checked further
            found.append(exc.finding(ds.shown))
            ds.lines = array("I")
            continue
        found += _after_reading(loaded, ds, json_errors)
        if not ds.count:
            continue
        found += unchecked + row_findings.done() + duplicates(ds, own)
        if key == "test_datasets":
            tests.append((ds, rows, prompts))
    found += leakage(named, train_rows, train_prompts, tests)
    return [ds for ds in named if ds.count], found


def _json_errors(ds: DataSet, capped: Capped) -> Callable[[int, ValueError], None]:
    """Where DataSet.rows reports a line (or a whole .json array, line 0) that is not JSON."""
    def bad(n: int, exc: ValueError) -> None:
        if n:
            capped.add(Finding(ds.shown, n, "data-json",
                               f"line is not JSON ({str(exc).split(':')[0]}); every line must be one JSON object"))
        else:
            capped.add(Finding(ds.shown, getattr(exc, "lineno", None), "data-json", f"not valid JSON ({exc}); fix the file"))
    return bad


def duplicates(ds: DataSet, own: Seen) -> list[Finding]:
    capped = Capped()
    for line, first in own.repeats():
        capped.add(Finding(ds.shown, line or None, "data-duplicate",
                           f"same row as line {first}; duplicates weigh a row twice: drop one"))
    return capped.done()


def leakage(sets: list[DataSet], train_rows: Seen, train_prompts: Seen,
            tests: list[tuple[DataSet, Seen, Seen]]) -> list[Finding]:
    if not tests:
        return []
    rows, prompts = train_rows.first(), train_prompts.first()
    capped = Capped()
    for ds, test_rows, test_prompts in tests:
        prompt_of = dict(zip(np_list(test_prompts.where), np_list(test_prompts.digests), strict=True))
        for digest, where in zip(np_list(test_rows.digests), np_list(test_rows.where), strict=True):
            if (found := lookup(rows, digest)) is not None:
                what = "the same row is in training"
            elif (p := prompt_of.get(where)) is not None and (found := lookup(prompts, p)) is not None:
                what = "the same prompt is in training"
            else:
                continue
            source = sets[found >> 32]
            capped.add(Finding(ds.shown, (where & 0xFFFFFFFF) or None, "data-leakage",
                               f"{what} ({source.shown}:{found & 0xFFFFFFFF}), so evaluation measures memory, not "
                               f"generalisation; remove it from one of the two sets"))
    return capped.done()


def np_list(values: array[int]) -> list[int]:
    return values.tolist()

