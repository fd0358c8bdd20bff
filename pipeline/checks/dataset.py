"""One data set a config names, as the data checks read it: its entry, its file and, per row, only its
line and (once measured) its token length. The rows themselves are streamed from the file each time
they are needed (`DataSet.rows`), so no check holds a dataset in memory, and reading a large file says
how far it got (`Progress`).

`checks.data` reads and judges the rows, `checks.rows` knows each dataset type's rows, `checks.lengths`
measures them; all three share this.
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import safeio
from pipeline.core.errors import Finding, printable

#: findings of one rule shown per file; the rest are summed up in one more line
SHOWN_PER_RULE = 5


@dataclass
class DataSet:
    """One `datasets`/`test_datasets` entry and what was learned reading its file, which is streamed: the
    rows themselves are never all held (`rows()` reads them again), so memory does not grow with the file."""

    key: str
    index: int
    entry: dict[str, Any]
    path: Path | None = None
    #: the line of every row, in file order (4 bytes a row)
    lines: array[int] = field(default_factory=lambda: array("I"))
    #: tokens per row with the config's tokenizer (None: not measured)
    lengths: Sequence[int] | None = None
    #: an upper bound of every row's tokens where the tokenizer is not available (bytes of the rendering)
    bounds: Sequence[int] | None = None

    @property
    def label(self) -> str:
        return f"{self.key}[{self.index}]"

    @property
    def count(self) -> int:
        """Rows read from the file."""
        return len(self.lines)

    @functools.cached_property
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

    def rows(self, bad: Callable[[int, ValueError], None] | None = None,
             doing: str = "reading") -> Iterator[tuple[int, Any]]:
        """(line, row) of every row, streamed from the file (a .json array is parsed whole, within the data
        limit); a line that is not JSON goes to `bad` (line, error), or is skipped. `doing` names the work
        in the progress lines a large file gets."""
        assert self.path is not None
        limit, what = safeio.data_bytes(), self.shown
        progress = Progress(self.path, what, doing)
        if self.path.suffix == ".json":
            with safeio.open_regular(self.path, "data", limit, what) as fh:
                head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
            if head.startswith(b"["):
                try:
                    rows = safeio.json_loads(safeio.read_text(self.path, "data", limit, what))
                except ValueError as exc:
                    if bad is not None:
                        bad(0, exc)
                    return
                yield from ((0, row) for row in rows)
                return
        for n, raw in safeio.lines(self.path, "data", max_bytes=limit, max_line=safeio.line_bytes(), what=what):
            progress.tick(len(raw))
            if not raw.strip():
                continue
            try:
                row = safeio.json_loads(raw)
            except ValueError as exc:
                if bad is not None:
                    bad(n, exc)
                continue
            yield n, row
        progress.done()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entry": self.label, "path": str(self.entry.get("path")),
                               "resolved": str(self.path) if self.path else None, "rows": self.count}
        if self.lengths:
            out["tokens"] = {"min": min(self.lengths), "median": int(statistics.median(self.lengths)),
                             "max": max(self.lengths), "total": sum(self.lengths)}
        elif self.bounds:
            out["tokens_at_most"] = {"max": max(self.bounds), "total": sum(self.bounds)}
        return out


class Progress:
    """A line on stderr every PROGRESS_S seconds while a file is read, once it has taken that long: a large
    dataset says how far it got instead of printing nothing for minutes."""

    def __init__(self, path: Path, what: str, doing: str = "reading") -> None:
        self.what, self.doing, self.read, self.started = what, doing, 0, time.monotonic()
        self.next = self.started + PROGRESS_S
        try:
            self.size = path.stat().st_size
        except OSError:
            self.size = 0

    def tick(self, n: int) -> None:
        self.read += n
        if (now := time.monotonic()) >= self.next:
            self.next = now + PROGRESS_S
            share = f" ({self.read / self.size:.0%})" if self.size else ""
            print(printable(f"note: {self.doing} {self.what}: {safeio.human(self.read)} of {safeio.human(self.size)}"
                            f"{share}, {now - self.started:.0f}s"), file=sys.stderr, flush=True)

    def done(self) -> None:
        if time.monotonic() - self.started >= PROGRESS_S:
            print(printable(f"note: {self.doing} {self.what}: done, {safeio.human(self.read)} in "
                            f"{time.monotonic() - self.started:.0f}s"), file=sys.stderr, flush=True)


#: seconds of reading before a file's progress is shown, and between two lines of it
PROGRESS_S = 5.0


class Capped:
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


