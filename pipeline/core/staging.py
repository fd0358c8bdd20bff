"""Outputs that appear whole or not at all: staged in a temporary folder beside the target, then renamed.

An evaluation report (`RUN/eval/`), a merged model (`RUN/merged/`) and a model built into the cache are
each written into `<prefix><pid>` next to where they belong, and renamed into place only once complete.
A rename within one folder is atomic, so a reader (or a later command) sees the earlier target or the new
one, never half of either:

    with staging.Staging(run.path / "eval", ".eval-") as stage:
        write_the_report(stage.path)
        stage.commit()              # anything that ends the block before this removes stage.path

What a block leaves without committing (an error, Ctrl-C, a failed check, a `return`) is removed on the
way out. A folder that a kill left behind (its pid is no longer alive on this host) is removed by the next
`Staging` of the same prefix, or by `clean`. On commit an existing target is replaced through
`<prefix><pid>-old` (a whole target exists at every moment but the one between two renames), or kept,
as the caller asks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType

from pipeline.core.proc import pid_alive

OLD = "-old"


def clean(parent: Path, prefix: str) -> list[Path]:
    """Remove the `<prefix><pid>` and `<prefix><pid>-old` folders in `parent` whose process is gone."""
    gone = []
    for stale in parent.iterdir() if parent.is_dir() else ():
        if not stale.name.startswith(prefix) or not stale.is_dir():
            continue
        if not pid_alive(stale.name[len(prefix):].removesuffix(OLD)):
            shutil.rmtree(stale, ignore_errors=True)
            gone.append(stale)
    return gone


class Staging:
    """A fresh temporary folder for `target`'s next version: `<prefix><pid>` in the target's folder."""

    def __init__(self, target: Path, prefix: str) -> None:
        self.target = target
        self.prefix = prefix
        self.path = target.parent / f"{prefix}{os.getpid()}"
        self.opened = False

    def open(self) -> Staging:
        """Remove stale folders of dead processes and make this one, empty (OSError where the disk refuses)."""
        clean(self.target.parent, self.prefix)
        shutil.rmtree(self.path, ignore_errors=True)  # not ours yet: left by an earlier process of our pid
        self.path.mkdir()
        self.opened = True
        return self

    def __enter__(self) -> Staging:
        return self if self.opened else self.open()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.discard()

    def discard(self) -> None:
        """Remove what was staged and not committed (nothing, after a commit of the whole folder)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def commit(self, source: Path | None = None, *, replace: bool = True) -> bool:
        """Rename `source` (the staging folder, or a folder inside it) to the target; True once it is there.

        replace: an existing target is swapped out and removed; where the second rename fails the earlier
        target is put back. replace=False: an existing target stays (another writer got there first) and
        ours goes with the staging folder: False.
        """
        source = self.path if source is None else source
        if not replace:
            try:
                os.rename(source, self.target)  # refused where the target exists and is not empty
            except OSError:
                if not self.target.exists():
                    raise
                return False
            return True
        if not self.target.exists():
            os.rename(source, self.target)
            return True
        old = self.path.with_name(f"{self.path.name}{OLD}")
        os.rename(self.target, old)
        try:
            os.rename(source, self.target)
        except BaseException:
            os.rename(old, self.target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return True
