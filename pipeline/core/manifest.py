"""A run's manifest.json: its schema, its one writer, and the tolerant reading of it.

`Manifest` names every field pipeline writes into a manifest and the type it writes there; every field is
optional, since a manifest grows over the run (`start` writes the first ten and the stage's own, an attempt,
a resume, a merge, an evaluation and the end add theirs). All writes go through `start`, `update` and
`finish` here (`pipeline.core.runs` keeps `start_manifest`, `Run.update_manifest` and `finish_manifest` as
the names stages call them by). A write of a field the schema does not name, or of a value of another type,
raises SchemaError before anything is written: that is a bug in pipeline, caught by the tests, never input.

Reading stays tolerant (`tolerant`): a field of another type than pipeline writes (hand-edited, damaged)
reads as absent, a field the schema does not name (an older or newer pipeline's) is kept as it is, and a
manifest without the fields a later pipeline added reads as one without them.

The JSON on disk is the dict as built: `start` writes its keys in the order listed there, an update keeps
the existing keys where they are and appends new ones.
"""

from __future__ import annotations

import datetime as dt
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack


class ConfigRecord(TypedDict):
    """The config a run came from: the user's file (its path and sha256) and the resolved one axolotl ran."""

    path: str
    sha256: str
    resolved_sha256: str


class Manifest(TypedDict, total=False):
    """Every field of a run's manifest.json, and its type (`X | None`: pipeline also writes null there)."""

    # written by start, in this order
    run: str
    stage: str
    status: str  # running, succeeded, failed, interrupted, ... (pipeline.core.outcome)
    started: str  # runs.now()
    command: list[str]
    config: ConfigRecord
    data: dict[str, str]  # data file -> sha256
    versions: dict[str, Any]
    git: dict[str, Any]
    hardware: dict[str, Any]
    # the stage's own, passed to start (pipeline.core.run_start.start_run)
    offline: bool
    overrides: dict[str, Any]
    bounds: dict[str, Any]
    trust_remote_code: dict[str, Any]
    loss_weighting: str
    max_steps: int  # smoke
    world_size: int
    attempts: list[dict[str, Any]]  # train: one entry per attempt
    compute: dict[str, Any]  # `pipeline.compute: fastest`'s choice
    # an attempt (train), a resume (train --resume)
    pid: int
    host: str
    resumes: list[dict[str, Any]]
    # a run over several nodes (pipeline.core.nodes.join)
    topology: dict[str, Any]
    gpus_per_node: int
    nodes: list[dict[str, Any]]  # node 0's: every node's claim
    rank0: dict[str, Any]  # another node's: node 0's host and run
    # the end (finish)
    finished: str | None  # null while an attempt runs again
    exit_code: int
    axolotl_exit_code: int
    runtime_s: float
    summary: dict[str, Any]
    problem: str
    last_checkpoint: str | None
    adapter: str
    # later commands on the run
    merge: dict[str, Any]
    evaluate: dict[str, Any]


class Run(Protocol):
    """The run folder a manifest belongs to (pipeline.core.runs.Run; named here so that this module needs
    nothing from that one, which writes its manifest through this)."""

    @property
    def name(self) -> str: ...
    @property
    def manifest_path(self) -> Path: ...
    def manifest(self) -> dict[str, Any]: ...
    def write_json(self, path: Path, obj: Any) -> None: ...


class SchemaError(TypeError):
    """A write of a field the manifest's schema does not name, or of a value of another type: a bug."""


#: field -> its type, as the schema declares it
FIELDS: dict[str, Any] = typing.get_type_hints(Manifest)


def matches(value: Any, kind: Any) -> bool:
    """Whether `value` (as JSON would hold it) is of the declared type `kind`; bool is no int, int is a float."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return True
    if kind is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if typing.is_typeddict(kind):
        hints = typing.get_type_hints(kind)
        return (isinstance(value, dict) and set(value) == set(hints)
                and all(matches(value[k], t) for k, t in hints.items()))
    if origin is list:
        return isinstance(value, list) and all(matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and matches(v, args[1]) for k, v in value.items())
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check(fields: Mapping[str, Any]) -> None:
    """SchemaError on the first field the schema does not name or whose value is of another type."""
    for name, value in fields.items():
        if name not in FIELDS:
            raise SchemaError(f"manifest field {name!r} is not in pipeline.core.manifest.Manifest")
        if not matches(value, FIELDS[name]):
            raise SchemaError(f"manifest field {name!r}: {value!r} is not {FIELDS[name]}")


def _read_kind(kind: Any) -> type:
    """The JSON type a reader may rely on for a field: its declared type without `None` and parameters."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1:
        kind = args[0]
    if typing.is_typeddict(kind):
        return dict
    return typing.get_origin(kind) or kind


#: fields as readers see them: str, int and float fields may also be null, dict and list ones may not
READ_KINDS: dict[str, type] = {name: _read_kind(kind) for name, kind in FIELDS.items()}


def _wrong_type(value: Any, kind: type) -> bool:
    if value is None:
        return kind in (dict, list)
    if kind is bool:
        return not isinstance(value, bool)
    if kind is float:
        return isinstance(value, bool) or not isinstance(value, (int, float))
    return isinstance(value, bool) or not isinstance(value, kind)


def tolerant(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the fields of another type than pipeline writes there (`"summary": []` reads as no
    summary); fields the schema does not name are kept."""
    return {k: v for k, v in data.items() if not (k in READ_KINDS and _wrong_type(v, READ_KINDS[k]))}


def start(run: Run, *, stage: str, config_path: Path, config_sha256: str, resolved_sha256: str,
          data_files: Iterable[Path], argv: list[str] | None = None, data_hashes: dict[str, str] | None = None,
          **extra: Any) -> dict[str, Any]:
    """Write a new run's manifest (status running) and return it: the run, its config and data hashes,
    what produced it (pipeline.core.provenance.record), then `extra` (the stage's own fields)."""
    from pipeline.core import provenance

    manifest = {
        "run": run.name,
        "stage": stage,
        "status": "running",
        "started": now(),
        "command": argv if argv is not None else sys.argv,
        "config": {"path": str(config_path), "sha256": config_sha256, "resolved_sha256": resolved_sha256},
        "data": data_hashes if data_hashes is not None else provenance.data_hashes(data_files),
        **provenance.record(config_path),
        **extra,
    }
    check(manifest)
    run.write_json(run.manifest_path, manifest)
    return manifest


def update(run: Run, /, **fields: Unpack[Manifest]) -> dict[str, Any]:
    """Set `fields` in the run's manifest (new ones after the existing ones) and return the whole of it."""
    return _write(run, fields)


def finish(run: Run, status: str, /, **fields: Unpack[Manifest]) -> dict[str, Any]:
    """Record how the run ended: `status`, the time, then `fields`."""
    return _write(run, {"status": status, "finished": now(), **fields})


def _write(run: Run, fields: Mapping[str, Any]) -> dict[str, Any]:
    check(fields)
    data = run.manifest()
    data.update(fields)
    run.write_json(run.manifest_path, data)
    return data


def now() -> str:
    """The time stamp every manifest and result file uses: UTC, to the second, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
