"""Run folders: one per invocation, holding everything needed to know what produced a result.

    runs/20261125-174312-tiny_cpu-smoke/
        config.yaml      the resolved config axolotl ran (the user's file is never edited)
        source.yaml      a byte copy of the user's config as it was
        manifest.json    versions, git revision, hashes of config and data, hardware, command, status
        metrics.jsonl    one JSON object per logged step, written by the metrics recorder plugin
        axolotl.log      axolotl's output (it also streams to the terminal)
        output/          axolotl's output_dir: adapter, checkpoints

A folder is created only after the input has been validated, so bad input leaves nothing behind, and
one that cannot be set up completely (a full disk, a read-only folder) is removed again. Files are
written through a temporary name and renamed, so none is ever seen half-written. Each folder has one
writer at a time (`RUN/.lock`, see pipeline.core.lock) and keeps a small reserve file (`RUN/.reserve`)
that is given up when the disk is full, so that the manifest can still say how the run ended.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

import yaml

from pipeline.core import lock, manifest, safeio, summary
from pipeline.core.errors import Finding, UserError, printable
from pipeline.core.manifest import Manifest

# smoke, train and evaluate still call these as runs.<name>; they live in provenance

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
RESERVE = ".reserve"
#: enough for the manifest and smoke.json of any run
RESERVE_BYTES = 256 * 1024


def runs_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get("PIPELINE_RUNS_DIR") or "runs").expanduser()


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_new(folder: Path, stem: str, suffix: str, text: str) -> Path:
    """Write `folder/stem<suffix>`, or `stem-1<suffix>`, ... : never over a file another command wrote."""
    tmp = folder / f".{stem}.{os.getpid()}.tmp"
    try:
        write_atomic(tmp, text)
        for n in range(1000):
            path = folder / f"{stem}{'' if n == 0 else f'-{n}'}{suffix}"
            try:
                os.link(tmp, path)  # fails where the name exists: the claim and the write are one step
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"no free name for {stem}{suffix} in {folder}")
    finally:
        tmp.unlink(missing_ok=True)


class CorruptManifest(UserError):
    """A manifest.json that is not a JSON object (truncated, edited, overwritten)."""


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest as a dict ({} when there is none), without fields of another type than pipeline writes there
    (`"summary": []` reads as no summary); CorruptManifest when it is not a JSON object at all."""
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        data = safeio.read_json(path, what="the manifest", follow=False)
    except safeio.BadFile as exc:
        raise CorruptManifest(Finding(str(path), None, "manifest-corrupt", f"{exc.message}; the run's record is "
                                                                            f"damaged: move the folder aside")) from None
    if not isinstance(data, dict):
        raise CorruptManifest(Finding(str(path), None, "manifest-corrupt",
                                      f"the manifest is a JSON {type(data).__name__}, not an object; the run's "
                                      f"record is damaged: move the folder aside"))
    # a field of another type than pipeline writes there (hand-edited, damaged) reads as absent
    return manifest.tolerant(data)


@dataclass
class Run:
    path: Path
    #: this process's lock on the folder, when it writes into it
    lock: lock.RunLock | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def output_dir(self) -> Path:
        return self.path / "output"

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.manifest_path)

    def update_manifest(self, /, **fields: Unpack[Manifest]) -> dict[str, Any]:
        """manifest.update: SchemaError for a field the schema does not name or a value of another type."""
        return manifest.update(self, **fields)

    def write_json(self, path: Path, obj: Any) -> None:
        """write_json into the run folder; on a full disk, the folder's reserve is given up for it."""
        try:
            write_json(path, obj)
        except OSError as exc:
            reserve = self.path / RESERVE
            if exc.errno != errno.ENOSPC or not reserve.exists():
                raise
            reserve.unlink()
            write_json(path, obj)

    def metrics(self, strict: bool = True) -> list[dict[str, Any]]:
        """metrics.jsonl's records. Not a regular file (DamagedRun): raised, or with `strict=False` (a run
        that just ended must still record how) a warning and no records."""
        return read_jsonl(self.metrics_path, strict)

    def take_lock(self) -> None:
        """Hold the folder's lock for the rest of this command (UserError run-locked if another holds it)."""
        if self.lock is None:
            self.lock = lock.acquire(self.path)


def read_jsonl(path: Path, strict: bool = True) -> list[dict[str, Any]]:
    """The metrics recorder's records in a JSONL file; a line that is not one (a last line cut short by a
    crash, a damaged or edited one, bytes that are not UTF-8: see summary.well_formed) is skipped, not
    fatal. The file is read through the bounded reader: one that is not a regular file (a FIFO, a
    directory, a symlink to /dev/zero) or is over safeio.MAX_METRICS_BYTES is DamagedRun, never a hang."""
    try:
        return [record for line in safeio.records(path, "metrics", what=path.name)
                if (record := parse_record(line)) is not None]
    except safeio.BadFile as exc:
        if strict:
            raise damaged(path, exc) from None
        print(f"warning: {damaged(path, exc).findings[0]}; its records are not read", file=sys.stderr)
        return []


class DamagedRun(UserError):
    """A file of a run folder that is not what pipeline wrote there (a FIFO, a device, a directory, a
    symlink, a file far larger than any run writes): one line, exit 2."""


def damaged(path: Path, exc: safeio.BadFile) -> DamagedRun:
    return DamagedRun(Finding(str(path), None, exc.rule, exc.message))


def parse_record(line: str) -> dict[str, Any] | None:
    """One line of metrics.jsonl as a record, or None where it is not one."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if summary.well_formed(record) else None


def create(root: Path, config_name: str, stage: str) -> Run:
    """A new run folder with a unique, sortable name, locked by this process, with its reserve written.

    A runs folder that cannot be written is a UserError (runs-unwritable, exit 2); nothing is left.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(root, exc) from None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{folder_label(config_name)}-{stage}"
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise unwritable(root, exc) from None
        run = Run(path)
        with setting_up(run):
            run.take_lock()
            with (path / RESERVE).open("wb") as fh:
                fh.write(b"\0" * RESERVE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
        return run
    raise RuntimeError(f"could not create a run folder under {root}")


#: the longest config label a run folder's name carries, in UTF-8 bytes (file systems allow 255 a name)
LABEL_BYTES = 96


def folder_label(config_name: str) -> str:
    """The config's part of a run folder's name: its letters, digits and `._+-` kept, any other character (a
    line break, a control character, a shell or YAML indicator, an undecodable byte) made `_`, and cut to
    LABEL_BYTES, so a name a stranger chose never adds structure to a path, a table or a generated file."""
    kept = "".join(c if (c.isalnum() and c.isprintable()) or c in "._+-" else "_" for c in config_name)
    kept = kept.encode("utf-8", "replace")[:LABEL_BYTES].decode("utf-8", "ignore").strip("._") or "config"
    return kept


def unwritable(where: Path, exc: OSError) -> UserError:
    if exc.errno == errno.ENAMETOOLONG:
        return UserError.at(str(where), None, "runs-unwritable",
                            "the path is longer than the file system allows; choose a shorter --runs-dir "
                            "(nothing was kept)")
    return UserError.at(str(where), None, "runs-unwritable",
                        f"cannot write here ({exc.strerror or exc}); free space, make it writable or choose "
                        f"another --runs-dir (nothing was kept)")


@contextmanager
def setting_up(run: Run) -> Iterator[None]:
    """Setting up a new run folder: any failure removes the folder, so none is left without a manifest."""
    try:
        yield
    except BaseException as exc:
        if run.lock is not None:
            run.lock.release()
            run.lock = None
        shutil.rmtree(run.path, ignore_errors=True)
        if isinstance(exc, OSError):
            raise unwritable(run.path.parent, exc) from None
        raise


def find(root: Path, ref: str) -> Run:
    """The run a user names: a folder path, or a run name under the runs folder."""
    path = Path(ref) if Path(ref).is_dir() else root / ref
    if not os.path.lexists(path / MANIFEST) or not path.is_dir():  # a manifest that is no file: manifest-corrupt
        raise UserError.at(ref, None, "run-missing",
                           f"no run folder with a manifest here (looked in {path}); see `pipeline runs`")
    return Run(path)


def all_runs(root: Path) -> list[Run]:
    """Every run folder with a readable manifest, oldest first; a damaged manifest is skipped with a warning."""
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.iterdir()):
        if not p.is_dir() or not os.path.lexists(p / MANIFEST):
            continue
        try:
            read_manifest(p / MANIFEST)
        except CorruptManifest as exc:
            print(printable(f"warning: {exc.findings[0]}; skipped"), file=sys.stderr)
            continue
        found.append(Run(p))
    return sorted(found, key=lambda r: r.name)


def find_eligible(root: Path, ref: str, problem: Callable[[Run], str | None], rule: str) -> Run:
    """The run a user names (see `find`), refused with one line under `rule` when `problem` finds one."""
    run = find(root, ref)
    if (why := problem(run)) is not None:
        raise UserError.at(str(run.path), None, rule, why)
    return run


def newest(root: Path, problem: Callable[[Run], str | None]) -> Run | None:
    """The newest run under `root` for which `problem` finds nothing (merge and evaluate's --auto pick)."""
    return next((run for run in reversed(all_runs(root)) if not problem(run)), None)


def run_config(run: Run) -> dict[str, Any]:
    """The run's own config.yaml, which merge and evaluate load the base model from; damaged: one line."""
    path = run.path / "config.yaml"
    try:
        cfg = safeio.load_yaml(safeio.read_text(path, "run-config", safeio.MAX_CONFIG_BYTES, what="the run's config",
                                                follow=False))[1]
    except safeio.BadFile as exc:
        raise exc.user_error(path) from None
    except yaml.YAMLError:
        cfg = None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("base_model"), str):
        raise UserError.at(str(path), None, "run-config-corrupt", "the run's config is damaged (no base_model); "
                                                                  "train the run again")
    return cfg


def prepared_data(run: Run) -> Path | None:
    """The prepared-data folder the run's config.yaml names (keyed by its data's content), if any."""
    try:
        cfg = safeio.load_yaml(safeio.read_text(run.path / "config.yaml", "run-config", safeio.MAX_CONFIG_BYTES,
                                                follow=False))[1]
        return Path(cfg["dataset_prepared_path"])
    except (safeio.BadFile, OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def start_manifest(run: Run, *, stage: str, config_path: Path, config_sha256: str, resolved_sha256: str,
                   data_files: Iterable[Path], argv: list[str] | None = None,
                   data_hashes: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """manifest.start: a new run's manifest."""
    return manifest.start(run, stage=stage, config_path=config_path, config_sha256=config_sha256,
                          resolved_sha256=resolved_sha256, data_files=data_files, argv=argv,
                          data_hashes=data_hashes, **extra)


def finish_manifest(run: Run, status: str, /, **fields: Unpack[Manifest]) -> dict[str, Any]:
    """manifest.finish: how the run ended."""
    return manifest.finish(run, status, **fields)


#: the time stamp every manifest and result file uses (it lives with the manifest's schema)
now = manifest.now
