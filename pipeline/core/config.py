"""Load a user's axolotl YAML, apply overrides, and resolve it into what axolotl will run.

The user's file is never edited. `load` reads it and remembers the line of every key so findings can
point at `file:line`; `resolve` returns a new dict (plus the project's own `pipeline:` section, which
axolotl never sees) that the stages write into the run folder and hand to axolotl.

Two resolutions make a config portable between machines:
- `base_model: pipeline://tiny-llama` (or `pipeline://random/<architecture>`) names a model that
  pipeline builds locally and deterministically (see `pipeline.core.models`); it becomes a local path.
- relative dataset paths become absolute paths (relative to the current directory, as axolotl reads
  them), so the resolved config runs from anywhere, including inside a container.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.core import safeio
from pipeline.core.errors import Finding, UserError, printable

#: file suffixes that mark a dataset `path` as a local file rather than a hub id
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow", ".txt")
#: keys of the project's own section; axolotl never sees it
PIPELINE_KEY = "pipeline"

KeyPath = tuple[str | int, ...]


@dataclass
class LoadedConfig:
    """A config as the user wrote it, with the line of every key."""

    path: Path
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)
    text: str = ""
    #: `--set` values already applied to `data` (the file's text is as the user wrote it)
    overrides: dict[str, Any] = field(default_factory=dict)

    def line(self, *keys: str | int) -> int | None:
        """Line of a key (1-based), or of its nearest parent that has one."""
        while keys:
            if keys in self.lines:
                return self.lines[keys]
            keys = keys[:-1]
        return None

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def section(self) -> dict[str, Any]:
        """The project's own `pipeline:` section (bounds, smoke settings)."""
        value = self.data.get(PIPELINE_KEY) or {}
        return value if isinstance(value, dict) else {}


def load(path: str | os.PathLike[str]) -> LoadedConfig:
    """Read a YAML config; anything unreadable, unsafe or malformed is a UserError naming file and line.

    The file must be a regular UTF-8 file of at most 1 MiB whose aliases expand to a bounded size (see
    `pipeline.core.safeio`); a NaN value (`.nan`) of an axolotl setting is refused, since none takes one.
    """
    p = Path(path)
    try:
        text = safeio.read_text(p, "config", safeio.MAX_CONFIG_BYTES, what="config file")
        node, data = safeio.load_yaml(text)
    except safeio.BadFile as exc:
        raise exc.user_error(p) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "malformed YAML"
        raise UserError.at(str(p), line, "yaml-syntax", f"{problem}; fix the YAML syntax here") from None
    except yaml.YAMLError as exc:
        raise UserError.at(str(p), None, "yaml-syntax", f"{exc}; fix the YAML syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError.at(str(p), 1, "yaml-not-mapping", "the config must be a mapping of axolotl keys")
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _collect_lines(node, (), lines)
    nans = [(k, v) for k, v in safeio.find_nan(data) if k[0] != PIPELINE_KEY]  # the section owner judges its own
    if nans:
        raise UserError(*(Finding(str(p), _line(lines, keys), "config-nan",
                                  f"{'.'.join(map(str, keys))} is NaN (.nan); give it a number")
                          for keys, _ in nans))
    return LoadedConfig(path=p, data=data, lines=lines, text=text)


def _line(lines: Mapping[KeyPath, int], keys: KeyPath) -> int | None:
    while keys:
        if keys in lines:
            return lines[keys]
        keys = keys[:-1]
    return None


def _collect_lines(node: yaml.Node, prefix: KeyPath, out: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            out[key] = key_node.start_mark.line + 1
            _collect_lines(value_node, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = (*prefix, i)
            out[key] = item.start_mark.line + 1
            _collect_lines(item, key, out)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`key=value` pairs from the command line; values are parsed as YAML (`lr=2e-4`, `bf16=false`)."""
    out: dict[str, Any] = {}
    for item in items:
        if (lone := safeio.lone_surrogate(item)) is not None:  # bytes of the command line that are not UTF-8
            raise UserError.at("<command line>", None, "override-syntax",
                               f"--set {item!r} holds a byte that is not UTF-8 text ({lone!r}); write it in UTF-8")
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError.at("<command line>", None, "override-syntax",
                               f"override {item!r} is not key=value; write e.g. --set learning_rate=2e-4")
        try:  # bounded like a config file: an alias bomb on the command line is refused too
            value = safeio.load_yaml(raw)[1] if raw != "" else None
        except yaml.YAMLError:
            value = raw
        except safeio.BadFile as exc:
            raise UserError.at("<command line>", None, exc.rule, f"--set {key.strip()}: {exc.message}") from None
        if isinstance(value, str) and raw.strip()[:1] not in ("'", '"'):
            try:  # YAML 1.1 reads "2e-4" as a string; on a command line it means a number
                value = float(value)
            except ValueError:
                pass
        if not key.strip().startswith(f"{PIPELINE_KEY}.") and any(safeio.find_nan(value)):
            raise UserError.at("<command line>", None, "config-nan", f"--set {key.strip()}: NaN is not a value any "
                                                                     f"setting takes; give a number")
        out[key.strip()] = value
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any], *,
                    where: str = "<command line>") -> dict[str, Any]:
    """A copy of `data` with dotted keys set (`datasets.0.path=x` reaches into lists). A path that leads
    through a scalar, or to a list index that does not exist, is one UserError line, not a traceback."""
    result = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        target: Any = result
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            so_far = ".".join(parts[:depth]) or dotted
            if isinstance(target, list):
                if not part.isdigit() or int(part) >= len(target):
                    raise UserError.at("<command line>", None, "override-path",
                                       f"--set {dotted}: {so_far} is a list of {len(target)}; "
                                       f"{part!r} is not an index of it (0..{len(target) - 1}); fix the key")
                if last:
                    target[int(part)] = value
                else:
                    target = target[int(part)]
            elif isinstance(target, dict):
                if last:
                    target[part] = value
                else:
                    if target.get(part) is None:  # absent, or an empty YAML section
                        target[part] = {}
                    target = target[part]
            else:
                raise UserError.at("<command line>", None, "override-path",
                                   f"--set {dotted}: {so_far} in {where} is {target!r}, not a mapping or list; "
                                   f"it has no {part!r}; fix the key")
    return result


@dataclass
class ResolvedConfig:
    """What a stage hands to axolotl, and the project's own settings beside it."""

    source: LoadedConfig
    axolotl: dict[str, Any]
    settings: dict[str, Any]
    #: local files the run reads (datasets), for hashing into the manifest
    data_files: list[Path]
    #: True when every model and dataset is local, so the hub can be switched off
    offline: bool

    def dump(self) -> str:
        return generated_yaml([f"Resolved by pipeline from {self.source.path} (sha256 {self.source.sha256[:12]})."],
                              self.axolotl)


def generated_yaml(comments: Iterable[str], data: Mapping[str, Any]) -> str:
    """The text of a YAML file pipeline generates: `comments` as `# ` lines, then `data`.

    Contract: nothing from outside (a file name, a path, a run or model name, a `--set` value) can add
    structure to the file. Each comment is made one printable line (`errors.printable` escapes line breaks,
    YAML's NEL/LS/PS included, and every other control character), and values are written by PyYAML's safe
    emitter, which quotes what needs quoting. As defence in depth the text is parsed back and must equal
    `data` key for key; otherwise `GeneratedMismatch` names the first key that differs, and nothing should
    be written.
    """
    head = "".join(f"# {printable(str(line))}\n" for line in comments)
    text = head + yaml.safe_dump(dict(data), sort_keys=False)
    difference = first_difference(yaml.safe_load(text), dict(data))
    if difference is not None:
        raise GeneratedMismatch(difference)
    return text


def run_config_text(path: Path, comments: Iterable[str], data: Mapping[str, Any]) -> str:
    """`generated_yaml` for a run's config.yaml; a text that would not read back is the user's one line (the
    config at `path` carried what broke it), exit 2."""
    try:
        return generated_yaml(comments, data)
    except GeneratedMismatch as exc:
        raise UserError.at(str(path), None, "resolved-mismatch",
                           f"the run's config.yaml would not read back as resolved (at {exc.key!r}); nothing was "
                           "launched: rename the file or value that carries line breaks or control characters") from None


class GeneratedMismatch(ValueError):
    """A generated YAML file did not parse back to what pipeline meant to write; `key` is the first that differs."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the generated YAML does not parse back to what was meant at {key!r}")
        self.key = key


def first_difference(got: Any, want: Any, where: str = "") -> str | None:
    """The dotted path of the first place `got` and `want` differ (NaN equals NaN), or None when equal."""
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            return where or "<top>"
        for key in [*want, *(k for k in got if k not in want)]:
            if key not in got or key not in want:
                return f"{where}.{key}" if where else str(key)
            found = first_difference(got[key], want[key], f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
        return None
    if isinstance(want, (list, tuple)):
        if not isinstance(got, list) or len(got) != len(want):
            return where or "<top>"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            found = first_difference(g, w, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(want, float) and isinstance(got, float) and want != want and got != got:
        return None
    if type(got) is not type(want) or got != want:
        return where or "<top>"
    return None


def dataset_entries(cfg: Mapping[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(`datasets` or `test_datasets`, index, entry) for every dataset a config names."""
    out: list[tuple[str, int, dict[str, Any]]] = []
    for key in ("datasets", "test_datasets"):
        entries = cfg.get(key) or []
        if isinstance(entries, list):
            out.extend((key, i, e) for i, e in enumerate(entries) if isinstance(e, dict))
    return out


def is_local_dataset(entry: Mapping[str, Any]) -> bool:
    path = str(entry.get("path", ""))
    return path.endswith(DATA_SUFFIXES) or path.startswith(("/", "./", "../")) or safeio.present(path)


def find_data_file(path: str, config_path: Path) -> Path | None:
    """A dataset path as axolotl reads it (from the current directory), else beside the config or one
    folder up (configs/ sits next to data/ in a project), so a command works from any directory."""
    p = Path(path)
    try:
        p = p.expanduser()
    except RuntimeError:  # ~name of a user this machine does not have: the path as written (absent)
        pass
    if p.is_absolute():
        return p if safeio.present(p) else None
    here = config_path.resolve().parent
    for base in (Path.cwd(), here, here.parent):
        if safeio.present(base / p):
            return (base / p).resolve()
    return None


def resolve(loaded: LoadedConfig, overrides: Mapping[str, Any] | None = None, *,
            build_models: bool = True) -> ResolvedConfig:
    """Apply overrides, resolve model references and dataset paths; raise UserError on what cannot run."""
    from pipeline.core import models  # models imports torch: only when resolving for a run

    data = apply_overrides(loaded.data, overrides or {})
    settings = data.pop(PIPELINE_KEY, None) or {}
    offline = True

    for key in ("base_model", "tokenizer_config", "base_model_config"):
        ref = data.get(key)
        if isinstance(ref, str) and models.is_builtin(ref):
            try:
                data[key] = str(models.resolve(ref, build=build_models))
            except KeyError as exc:
                raise UserError.at(str(loaded.path), loaded.line(key), "model-unknown",
                                   f"{exc.args[0]}") from None
            except models.ModelUnavailable as exc:
                raise UserError.at(str(loaded.path), loaded.line(key), "model-unavailable", str(exc)) from None
        elif isinstance(ref, str) and not safeio.present(ref):
            offline = False  # a hub id: leave the hub reachable for this run

    data_files: list[Path] = []
    for key, i, entry in dataset_entries(data):
        if not is_local_dataset(entry):
            offline = False
            continue
        p = find_data_file(str(entry["path"]), loaded.path)
        if p is None:
            raise UserError.at(str(loaded.path), loaded.line(key, i, "path") or loaded.line(key),
                               "data-missing",
                               f"{key}[{i}].path {entry['path']!r} does not exist (looked in {Path.cwd()} and "
                               f"beside the config); fix the path")
        try:  # hashed into the manifest and the prepared-data key: a FIFO or a device would block that
            safeio.check_regular(p, "data", safeio.data_bytes(), what=f"{key}[{i}].path {entry['path']!r}")
        except safeio.BadFile as exc:
            raise exc.user_error(loaded.path, loaded.line(key, i, "path") or loaded.line(key)) from None
        entry["path"] = str(p)
        data_files.append(p.resolve())
    return ResolvedConfig(source=loaded, axolotl=data, settings=settings, data_files=data_files,
                          offline=offline)


def remote_code_origin(cfg: Any, user: Mapping[str, Any], launched: Mapping[str, Any]) -> dict[str, Any]:
    """Where the launched config's `trust_remote_code` came from, for the manifest: `{"value": bool,
    "from": "--set" | "config" | None}`.

    Contract: the flag reaches axolotl only as the user's own config or `--set` gave it (`user`: the config
    after overrides). Anything else, whatever produced it, raises before a run starts.
    """
    value = launched.get("trust_remote_code")
    if value != user.get("trust_remote_code") or ("trust_remote_code" in launched) != ("trust_remote_code" in user):
        raise RuntimeError("trust_remote_code in the resolved config differs from the user's config and --set")
    origin = "--set" if "trust_remote_code" in cfg.overrides else "config" if "trust_remote_code" in user else None
    return {"value": bool(value), "from": origin}

