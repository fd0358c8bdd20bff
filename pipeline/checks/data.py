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

import json
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import config as config_mod
from pipeline.core import safeio
from pipeline.core.config import LoadedConfig
from pipeline.core.errors import Finding

#: findings of one rule shown per file; the rest are summed up in one more line
SHOWN_PER_RULE = 5
#: axolotl's chat_template roles when the entry maps none (prompt_strategies/chat_template.py)
DEFAULT_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant",
                 "system": "system", "tool": "tool"}
CHECKED_TYPES = ("chat_template", "completion", "alpaca")


@dataclass
class DataSet:
    """The rows of one `datasets`/`test_datasets` entry, as read from its file."""

    key: str
    index: int
    entry: dict[str, Any]
    path: Path | None = None
    rows: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    #: tokens per row with the config's tokenizer (None: not measured)
    lengths: list[int] | None = None
    #: an upper bound of every row's tokens where the tokenizer is not available (bytes of the rendering)
    bounds: list[int] | None = None

    @property
    def label(self) -> str:
        return f"{self.key}[{self.index}]"

    @property
    def shown(self) -> str:
        """The file as findings print it: relative to the current directory where it can be."""
        if self.path is None:
            return str(self.entry.get("path"))
        try:
            return os.path.relpath(self.path)
        except ValueError:
            return str(self.path)

    @property
    def type(self) -> str:
        t = self.entry.get("type")
        return t if isinstance(t, str) else ""

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entry": self.label, "path": str(self.entry.get("path")),
                               "resolved": str(self.path) if self.path else None, "rows": len(self.rows)}
        if self.lengths:
            out["tokens"] = {"min": min(self.lengths), "median": int(statistics.median(self.lengths)),
                             "max": max(self.lengths), "total": sum(self.lengths)}
        elif self.bounds:
            out["tokens_at_most"] = {"max": max(self.bounds), "total": sum(self.bounds)}
        return out


class _Capped:
    """Collects findings, at most SHOWN_PER_RULE per (file, rule), then one line with the rest."""

    def __init__(self) -> None:
        self.found: list[Finding] = []
        self.extra: dict[tuple[str, str], tuple[int, Finding]] = {}
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, f: Finding) -> None:
        key = (f.path, f.rule)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] <= SHOWN_PER_RULE:
            self.found.append(f)

    def done(self) -> list[Finding]:
        out = list(self.found)
        for (path, rule), n in self.counts.items():
            if n > SHOWN_PER_RULE:
                sev = next(f.severity for f in self.found if (f.path, f.rule) == (path, rule))
                out.append(Finding(path, None, rule, f"{n - SHOWN_PER_RULE} more rows like the above", sev))
        return out


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
    capped = _Capped()
    try:
        _read_rows(ds, capped)
    except safeio.BadFile as exc:
        return None, [exc.finding(ds.shown)]
    if not ds.rows and capped.found and ds.path.suffix not in (".jsonl", ".json"):
        return None, [Finding(where, line, "data-format",
                              f"{what}: {ds.shown} is not JSON (line {capped.found[0].line}), yet axolotl reads it as "
                              f"JSON (no .parquet/.arrow/.csv/.txt suffix, no ds_type); point it at a JSON-lines file")]
    found = capped.done()
    if not ds.rows and not found:
        found.append(Finding(where, line, "data-empty", f"{ds.label}: {ds.shown} has no rows; point it at a file "
                                                        f"with data"))
    return ds, found


#: axolotl's own table (utils/data/shared.py): a suffix found anywhere in the path, else JSON
AXOLOTL_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".txt": "text"}


def axolotl_format(entry: Mapping[str, Any]) -> str:
    """How axolotl loads a local file: `ds_type`, else by a suffix found anywhere in the path, else JSON."""
    if entry.get("ds_type"):
        return str(entry["ds_type"])
    path = str(entry.get("path", ""))
    return next((kind for suffix, kind in AXOLOTL_FORMATS.items() if suffix in path), "json")


def _read_rows(ds: DataSet, capped: _Capped) -> None:
    """Rows of a JSON-lines file, streamed line by line, or of a .json array (read whole, within the limit)."""
    assert ds.path is not None
    limit, what = safeio.data_bytes(), ds.shown
    if ds.path.suffix == ".json":
        with safeio.open_regular(ds.path, "data", limit, what) as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"["):
            text = safeio.read_text(ds.path, "data", limit, what)
            try:
                ds.rows = list(safeio.json_loads(text))
                ds.lines = [0] * len(ds.rows)
            except ValueError as exc:
                capped.add(Finding(ds.shown, getattr(exc, "lineno", None), "data-json",
                                   f"not valid JSON ({exc}); fix the file"))
            return
    for n, raw in safeio.lines(ds.path, "data", max_bytes=limit, max_line=safeio.line_bytes(), what=what):
        if not raw.strip():
            continue
        try:
            ds.rows.append(safeio.json_loads(raw))
            ds.lines.append(n)
        except ValueError as exc:
            capped.add(Finding(ds.shown, n, "data-json",
                               f"line is not JSON ({str(exc).split(':')[0]}); every line must be one JSON object"))


# --- rows against their type --------------------------------------------------------------------------

def setting(entry: Mapping[str, Any], key: str, default: str) -> str:
    """A dataset entry's name of a field; one that is not a string reads as unset (axolotl's validation
    reports it), so a row is never looked up by a list or a number."""
    value = entry.get(key)
    return value if isinstance(value, str) and value else default


def _mapping(entry: Mapping[str, Any]) -> tuple[str, str]:
    props = entry.get("message_property_mappings")
    props = props if isinstance(props, dict) else {}
    role = setting(props, "role", setting(entry, "message_field_role", "role"))
    content = setting(props, "content", setting(entry, "message_field_content", "content"))
    return role, content


def _roles(entry: Mapping[str, Any]) -> dict[str, str]:
    mapped = entry.get("roles")
    if isinstance(mapped, dict) and mapped:
        return {str(s): str(t) for t, sources in mapped.items()
                for s in (sources if isinstance(sources, list) else [sources] if isinstance(sources, str) else [])}
    return dict(DEFAULT_ROLES)


def _trained_roles(entry: Mapping[str, Any], roles: Mapping[str, str]) -> set[str]:
    wanted = entry.get("roles_to_train")
    wanted = wanted if isinstance(wanted, list) else [wanted] if isinstance(wanted, str) else ["assistant"]
    return {roles.get(str(r), str(r)) for r in wanted}


def messages(ds: DataSet, row: Any) -> list[dict[str, Any]] | None:
    """A chat row's messages as {'role', 'content'} with roles mapped, or None where the row is malformed."""
    if not isinstance(row, dict):
        return None
    msgs = row.get(setting(ds.entry, "field_messages", "messages"))
    if not isinstance(msgs, list):
        return None
    role_key, content_key = _mapping(ds.entry)
    roles = _roles(ds.entry)
    out = []
    for m in msgs:
        if not isinstance(m, dict):
            return None
        out.append({"role": roles.get(str(m.get(role_key)), str(m.get(role_key))),
                    "content": m.get(content_key)})
    return out


def check_rows(ds: DataSet, cfg: Mapping[str, Any]) -> list[Finding]:
    if ds.type not in CHECKED_TYPES or cfg.get("rl"):
        what = f"an {cfg['rl']} preference set" if cfg.get("rl") else f"type {ds.entry.get('type')!r}"
        return [Finding(ds.shown, None, "data-type-unchecked",
                        f"{ds.label} is {what}: its rows are not checked (the check knows supervised "
                        f"{', '.join(CHECKED_TYPES)} rows)")]
    capped = _Capped()
    check = {"chat_template": _chat_row, "completion": _completion_row, "alpaca": _alpaca_row}[ds.type]
    for row, line in zip(ds.rows, ds.lines, strict=True):
        for rule, message in check(ds, row, cfg):
            capped.add(Finding(ds.shown, line or None, rule, message))
    return capped.done()


def _chat_row(ds: DataSet, row: Any, cfg: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    field_messages = setting(ds.entry, "field_messages", "messages")
    if not isinstance(row, dict):
        yield "data-row", f"row is a {type(row).__name__}, not an object with a {field_messages!r} list"
        return
    msgs = row.get(field_messages)
    if not isinstance(msgs, list) or not msgs:
        found = "missing" if msgs is None else ("empty" if msgs == [] else f"a {type(msgs).__name__}")
        keys = ", ".join(sorted(map(str, row))) or "none"
        yield "data-row", (f"{field_messages!r} is {found} (keys: {keys}); a chat_template row needs a list of "
                           f"messages, or set field_messages to the key that holds them")
        return
    role_key, content_key = _mapping(ds.entry)
    roles = _roles(ds.entry)
    explicit = isinstance(ds.entry.get("roles"), dict) and bool(ds.entry.get("roles"))
    trained = _trained_roles(ds.entry, roles)
    train_all = bool(cfg.get("train_on_inputs"))
    flag = setting(ds.entry, "message_field_training", "")
    any_trained = malformed = False
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or role_key not in m or content_key not in m:
            yield "data-row", (f"message {i} is not an object with {role_key!r} and {content_key!r}; fix the row or "
                               f"set message_property_mappings")
            return
        role = str(m[role_key])
        # an entry's own `roles:` replaces the defaults, and axolotl passes a role it does not map through as
        # it is (prompt_strategies/chat_template.py); with the defaults, an unmapped role is a data mistake
        if role not in roles and not explicit:
            yield "data-role", (f"message {i} has role {role!r}, which axolotl does not know (known: "
                                f"{', '.join(sorted(roles))}): it passes it through unmapped, so the template renders "
                                f"it as {role!r} and it is never trained; rename it or map it with `roles:` in the "
                                f"dataset entry")
            continue
        content = m[content_key]
        if content is not None and not isinstance(content, (str, list)):
            yield "data-row", f"message {i} ({role}) has {type(content).__name__} content, not text; write it as a string"
            malformed = True  # the fix is that line's: "no trained turn" on top would only repeat it
            continue
        if content is None or (isinstance(content, str) and not content.strip()):
            yield "data-empty-content", f"message {i} ({role}) has empty content; fill it or drop the row"
        if train_all or roles.get(role, role) in trained or (flag and m.get(flag)):
            any_trained = True
    if not any_trained and not malformed:
        yield "data-no-trained-turn", (f"no message has a trained role ({', '.join(sorted(trained))}), so the row "
                                       f"adds no loss; add an assistant turn or set roles_to_train")


def _completion_row(ds: DataSet, row: Any, cfg: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    key = setting(ds.entry, "field", "text")
    if not isinstance(row, dict) or not isinstance(row.get(key), str):
        yield "data-row", f"a completion row needs a string {key!r} field (or set `field:` in the dataset entry)"
    elif not row[key].strip():
        yield "data-empty-content", f"{key!r} is empty; fill it or drop the row"


def _alpaca_row(ds: DataSet, row: Any, cfg: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("instruction", "output")):
        yield "data-row", "an alpaca row needs string 'instruction' and 'output' fields"
    elif not row["output"].strip():
        yield "data-empty-content", "'output' is empty, so the row adds no loss; fill it or drop the row"


# --- duplicates and leakage ---------------------------------------------------------------------------

def _row_key(row: Any) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _prompt_key(ds: DataSet, row: Any) -> str | None:
    """What the model is asked (every untrained turn), so a test row with a new answer to a training
    prompt still counts as leaked."""
    if ds.type == "chat_template":
        msgs = messages(ds, row)
        if msgs is None:
            return None
        trained = _trained_roles(ds.entry, _roles(ds.entry))
        prompt = [(m["role"], m["content"]) for m in msgs if m["role"] not in trained]
        return json.dumps(prompt, ensure_ascii=False) if prompt else None
    if ds.type == "alpaca" and isinstance(row, dict):
        return json.dumps([row.get("instruction"), row.get("input")], ensure_ascii=False)
    return None


def duplicates(ds: DataSet) -> list[Finding]:
    capped, seen = _Capped(), dict[str, int]()
    for row, line in zip(ds.rows, ds.lines, strict=True):
        key = _row_key(row)
        if key in seen:
            capped.add(Finding(ds.shown, line or None, "data-duplicate",
                               f"same row as line {seen[key]}; duplicates weigh a row twice: drop one"))
        else:
            seen[key] = line
    return capped.done()


def leakage(train: list[DataSet], test: list[DataSet]) -> list[Finding]:
    rows: dict[str, str] = {}
    prompts: dict[str, str] = {}
    for ds in train:
        for row, line in zip(ds.rows, ds.lines, strict=True):
            rows.setdefault(_row_key(row), f"{ds.shown}:{line}")
            if (p := _prompt_key(ds, row)) is not None:
                prompts.setdefault(p, f"{ds.shown}:{line}")
    capped = _Capped()
    for ds in test:
        for row, line in zip(ds.rows, ds.lines, strict=True):
            if (where := rows.get(_row_key(row))) is not None:
                what = "the same row is in training"
            elif (p := _prompt_key(ds, row)) is not None and (where := prompts.get(p)) is not None:
                what = "the same prompt is in training"
            else:
                continue
            capped.add(Finding(ds.shown, line or None, "data-leakage",
                               f"{what} ({where}), so evaluation measures memory, not generalisation; remove it "
                               f"from one of the two sets"))
    return capped.done()


def check(loaded: LoadedConfig, cfg: Mapping[str, Any]) -> tuple[list[DataSet], list[Finding]]:
    """Every data check for one config but the token lengths (`lengths.check`, on the sets returned)."""
    found: list[Finding] = []
    sets: list[DataSet] = []
    for key, i, entry in config_mod.dataset_entries(cfg):
        ds, problems = load(loaded, key, i, entry)
        found += problems
        if ds is None or not ds.rows:
            continue
        sets.append(ds)
        found += check_rows(ds, cfg)
        found += duplicates(ds)
    train = [d for d in sets if d.key == "datasets"]
    test = [d for d in sets if d.key == "test_datasets"]
    found += leakage(train, test)
    return sets, found
